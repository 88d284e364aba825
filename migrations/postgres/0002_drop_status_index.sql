-- The index on contracts.status served only the periodic count of contracts by status (the
-- contractd_contracts metric, every 30 s), yet every status change of every contract updated
-- it: a random page per transition, rewritten by each batch. The count now scans the table.
DROP INDEX contracts_status;
