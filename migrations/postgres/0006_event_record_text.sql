-- The contract record of an event (the outbox) as `text` instead of `json`. Only contractd
-- writes it (serde_json's output, always valid JSON) and it is read back whole, as text, by
-- the feed and the webhooks: never queried inside. `json` runs PostgreSQL's JSON parser over
-- every record on insert just to check it: 100,000 records of about 730 bytes inserted in
-- 2.7 s as json, 1.7 s as text (docs/benchmarks.md). Rewrites the events table once.
ALTER TABLE contract_events ALTER COLUMN contract_record TYPE text USING contract_record::text;
