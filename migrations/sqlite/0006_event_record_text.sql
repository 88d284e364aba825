-- PostgreSQL changes the type of contract_events.contract_record from json to text in this
-- migration; SQLite already stores it as text, so there is nothing to change here.
SELECT 1;
