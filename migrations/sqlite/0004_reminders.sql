-- Reminders before deadlines and end dates (docs/rules.md §5.5): a contract's own lead times
-- (NULL: the configured ones; empty text: none), the reminders it was sent for dates still
-- ahead, the day its next reminder falls due, and the send_reminders job's due date, indexed
-- like the other four jobs' so a day with nothing to remind reads no contract.
ALTER TABLE contracts ADD COLUMN reminder_lead_times TEXT;
ALTER TABLE contracts ADD COLUMN reminders_sent TEXT;
ALTER TABLE contracts ADD COLUMN next_reminder_on TEXT;
ALTER TABLE contracts ADD COLUMN due_remind_on TEXT;

CREATE INDEX contracts_due_remind ON contracts (time_zone, due_remind_on, id)
    WHERE due_remind_on IS NOT NULL;
