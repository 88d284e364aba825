-- The contract record of an event (the outbox) as bytes: contractd now stores it compressed
-- with LZ4 against a fixed dictionary behind a format tag (src/storage/packed_record.rs),
-- about 150 bytes instead of about 680 of JSON text. Records already stored are kept as their
-- text's UTF-8 bytes, which start with `{` and are read as plain JSON. Rewrites the events
-- table once (as 0006 did), about 1 s per 100,000 events.
ALTER TABLE contract_events ALTER COLUMN contract_record TYPE bytea
    USING convert_to(contract_record, 'UTF8');
