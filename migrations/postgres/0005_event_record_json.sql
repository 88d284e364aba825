-- The contract record of an event (the outbox) as `json` instead of `jsonb`. It is written
-- with every event and read back whole, as text, by the feed and the webhooks: never queried
-- inside. `jsonb` parses and re-encodes every record on insert; `json` only checks it. Measured
-- on 100,000 records of about 730 bytes: 4.4-4.7 s as jsonb, 2.7 s as json, 1.7 s as text
-- (docs/benchmarks.md). Rewrites the events table once.
ALTER TABLE contract_events ALTER COLUMN contract_record TYPE json USING contract_record::json;
