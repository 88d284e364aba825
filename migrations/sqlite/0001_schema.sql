-- contractd schema, SQLite dialect. Dates are YYYY-MM-DD text, instants Unix milliseconds.

CREATE TABLE contracts (
    id                               INTEGER PRIMARY KEY,
    ref                              TEXT NOT NULL UNIQUE,
    version                          INTEGER NOT NULL DEFAULT 1,
    customer                         TEXT NOT NULL,
    status                           TEXT NOT NULL,
    time_zone                        TEXT NOT NULL,
    start_date                       TEXT NOT NULL,
    end_date                         TEXT,
    initial_term                     TEXT,
    original_end_date                TEXT,
    minimum_term_end                 TEXT,
    notice_period                    TEXT NOT NULL,
    cancellation_window              TEXT NOT NULL,
    auto_extend                      INTEGER NOT NULL,
    extension_term                   TEXT,
    proration                        TEXT NOT NULL,
    end_reason                       TEXT,
    end_notes                        TEXT,
    cancellation_received_on         TEXT,
    cancellation_end_date            TEXT,
    cancellation_reason              TEXT,
    cancellation_notes               TEXT,
    cancellation_final_invoice       INTEGER,
    cancellation_restore_auto_extend INTEGER,
    cancellation_date                TEXT,
    latest_cancellation_date         TEXT,
    -- When each daily job next needs this contract (see lifecycle::DueDates).
    due_cancellation_on              TEXT,
    due_extension_on                 TEXT,
    due_expiry_on                    TEXT,
    due_refresh_on                   TEXT,
    has_children                     INTEGER NOT NULL DEFAULT 0,
    updated_at_ms                    INTEGER NOT NULL
);

CREATE INDEX contracts_due_cancellation ON contracts (time_zone, due_cancellation_on, id)
    WHERE due_cancellation_on IS NOT NULL;
CREATE INDEX contracts_due_extension ON contracts (time_zone, due_extension_on, id)
    WHERE due_extension_on IS NOT NULL;
CREATE INDEX contracts_due_expiry ON contracts (time_zone, due_expiry_on, id)
    WHERE due_expiry_on IS NOT NULL;
CREATE INDEX contracts_due_refresh ON contracts (time_zone, due_refresh_on, id)
    WHERE due_refresh_on IS NOT NULL;
CREATE INDEX contracts_status ON contracts (status);

CREATE TABLE contract_lines (
    contract_id                      INTEGER NOT NULL REFERENCES contracts (id) ON DELETE CASCADE,
    position                         INTEGER NOT NULL,
    ref                              TEXT NOT NULL,
    description                      TEXT NOT NULL,
    kind                             TEXT NOT NULL,
    billable                         INTEGER NOT NULL,
    start_date                       TEXT NOT NULL,
    end_date                         TEXT,
    status                           TEXT NOT NULL,
    amount_minor                     INTEGER NOT NULL,
    currency                         TEXT NOT NULL,
    billing_period                   TEXT,
    auto_extend                      INTEGER NOT NULL,
    cancellation_received_on         TEXT,
    cancellation_end_date            TEXT,
    cancellation_reason              TEXT,
    cancellation_notes               TEXT,
    cancellation_final_invoice       INTEGER,
    cancellation_restore_auto_extend INTEGER,
    PRIMARY KEY (contract_id, position),
    UNIQUE (contract_id, ref)
);

CREATE TABLE billing_schedules (
    contract_id  INTEGER NOT NULL REFERENCES contracts (id) ON DELETE CASCADE,
    position     INTEGER NOT NULL,
    line_ref     TEXT NOT NULL,
    period_start TEXT NOT NULL,
    period_end   TEXT NOT NULL,
    amount_minor INTEGER NOT NULL,
    status       TEXT NOT NULL,
    document     TEXT,
    PRIMARY KEY (contract_id, position)
);

CREATE TABLE billing_documents (
    contract_id  INTEGER NOT NULL REFERENCES contracts (id) ON DELETE CASCADE,
    position     INTEGER NOT NULL,
    ref          TEXT NOT NULL,
    kind         TEXT NOT NULL,
    status       TEXT NOT NULL,
    consolidated INTEGER NOT NULL,
    amount_minor INTEGER NOT NULL,
    currency     TEXT NOT NULL,
    PRIMARY KEY (contract_id, position),
    UNIQUE (contract_id, ref)
);

CREATE TABLE renewals (
    contract_id INTEGER NOT NULL REFERENCES contracts (id) ON DELETE CASCADE,
    position    INTEGER NOT NULL,
    ref         TEXT NOT NULL,
    status      TEXT NOT NULL,
    PRIMARY KEY (contract_id, position)
);

CREATE TABLE change_requests (
    contract_id INTEGER NOT NULL REFERENCES contracts (id) ON DELETE CASCADE,
    position    INTEGER NOT NULL,
    ref         TEXT NOT NULL,
    status      TEXT NOT NULL,
    PRIMARY KEY (contract_id, position)
);

-- The audit trail. transition_key is unique per contract: the last guard against recording
-- (and so committing) the same transition twice.
CREATE TABLE contract_events (
    id             INTEGER PRIMARY KEY,
    contract_id    INTEGER NOT NULL REFERENCES contracts (id) ON DELETE CASCADE,
    contract_ref   TEXT NOT NULL,
    kind           TEXT NOT NULL,
    effective_on   TEXT NOT NULL,
    line_ref       TEXT,
    details        TEXT NOT NULL,
    transition_key TEXT NOT NULL,
    run_id         TEXT,
    recorded_at_ms INTEGER NOT NULL,
    UNIQUE (contract_id, transition_key)
);

-- Every zone that has contracts, so a tick learns the zones without reading contracts.
CREATE TABLE contract_zones (
    time_zone TEXT PRIMARY KEY
);

-- The run ledger: one row per (job, zone, business date).
CREATE TABLE job_runs (
    id             INTEGER PRIMARY KEY,
    job            TEXT NOT NULL,
    zone           TEXT NOT NULL,
    business_date  TEXT NOT NULL,
    run_id         TEXT NOT NULL,
    owner          TEXT NOT NULL,
    lease_until_ms INTEGER NOT NULL,
    status         TEXT NOT NULL,
    attempts       INTEGER NOT NULL DEFAULT 1,
    cursor_due     TEXT,
    cursor_id      INTEGER,
    batches        INTEGER NOT NULL DEFAULT 0,
    examined       INTEGER NOT NULL DEFAULT 0,
    changed        INTEGER NOT NULL DEFAULT 0,
    skipped        INTEGER NOT NULL DEFAULT 0,
    error          TEXT,
    started_at_ms  INTEGER NOT NULL,
    finished_at_ms INTEGER,
    UNIQUE (job, zone, business_date)
);

CREATE INDEX job_runs_business_date ON job_runs (business_date, status);
