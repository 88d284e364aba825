-- PostgreSQL changes the type of contract_events.contract_record from text to bytea in this
-- migration. SQLite keeps any value in any column: new records are stored as blobs
-- (src/storage/packed_record.rs), records already stored stay text and are read as their
-- bytes, so there is nothing to change here.
SELECT 1;
