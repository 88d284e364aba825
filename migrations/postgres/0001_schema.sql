-- contractd schema, PostgreSQL dialect. Dates are `date`, instants Unix milliseconds.

CREATE TABLE contracts (
    id                               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ref                              TEXT NOT NULL UNIQUE,
    version                          BIGINT NOT NULL DEFAULT 1,
    customer                         TEXT NOT NULL,
    status                           TEXT NOT NULL,
    time_zone                        TEXT NOT NULL,
    start_date                       DATE NOT NULL,
    end_date                         DATE,
    initial_term                     TEXT,
    original_end_date                DATE,
    minimum_term_end                 DATE,
    notice_period                    TEXT NOT NULL,
    cancellation_window              TEXT NOT NULL,
    auto_extend                      BOOLEAN NOT NULL,
    extension_term                   TEXT,
    proration                        TEXT NOT NULL,
    end_reason                       TEXT,
    end_notes                        TEXT,
    cancellation_received_on         DATE,
    cancellation_end_date            DATE,
    cancellation_reason              TEXT,
    cancellation_notes               TEXT,
    cancellation_final_invoice       BOOLEAN,
    cancellation_restore_auto_extend BOOLEAN,
    cancellation_date                DATE,
    latest_cancellation_date         DATE,
    -- When each daily job next needs this contract (see lifecycle::DueDates).
    due_cancellation_on              DATE,
    due_extension_on                 DATE,
    due_expiry_on                    DATE,
    due_refresh_on                   DATE,
    has_children                     BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at_ms                    BIGINT NOT NULL
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
    contract_id                      BIGINT NOT NULL REFERENCES contracts (id) ON DELETE CASCADE,
    position                         BIGINT NOT NULL,
    ref                              TEXT NOT NULL,
    description                      TEXT NOT NULL,
    kind                             TEXT NOT NULL,
    billable                         BOOLEAN NOT NULL,
    start_date                       DATE NOT NULL,
    end_date                         DATE,
    status                           TEXT NOT NULL,
    amount_minor                     BIGINT NOT NULL,
    currency                         TEXT NOT NULL,
    billing_period                   TEXT,
    auto_extend                      BOOLEAN NOT NULL,
    cancellation_received_on         DATE,
    cancellation_end_date            DATE,
    cancellation_reason              TEXT,
    cancellation_notes               TEXT,
    cancellation_final_invoice       BOOLEAN,
    cancellation_restore_auto_extend BOOLEAN,
    PRIMARY KEY (contract_id, position),
    UNIQUE (contract_id, ref)
);

CREATE TABLE billing_schedules (
    contract_id  BIGINT NOT NULL REFERENCES contracts (id) ON DELETE CASCADE,
    position     BIGINT NOT NULL,
    line_ref     TEXT NOT NULL,
    period_start DATE NOT NULL,
    period_end   DATE NOT NULL,
    amount_minor BIGINT NOT NULL,
    status       TEXT NOT NULL,
    document     TEXT,
    PRIMARY KEY (contract_id, position)
);

CREATE TABLE billing_documents (
    contract_id  BIGINT NOT NULL REFERENCES contracts (id) ON DELETE CASCADE,
    position     BIGINT NOT NULL,
    ref          TEXT NOT NULL,
    kind         TEXT NOT NULL,
    status       TEXT NOT NULL,
    consolidated BOOLEAN NOT NULL,
    amount_minor BIGINT NOT NULL,
    currency     TEXT NOT NULL,
    PRIMARY KEY (contract_id, position),
    UNIQUE (contract_id, ref)
);

CREATE TABLE renewals (
    contract_id BIGINT NOT NULL REFERENCES contracts (id) ON DELETE CASCADE,
    position    BIGINT NOT NULL,
    ref         TEXT NOT NULL,
    status      TEXT NOT NULL,
    PRIMARY KEY (contract_id, position)
);

CREATE TABLE change_requests (
    contract_id BIGINT NOT NULL REFERENCES contracts (id) ON DELETE CASCADE,
    position    BIGINT NOT NULL,
    ref         TEXT NOT NULL,
    status      TEXT NOT NULL,
    PRIMARY KEY (contract_id, position)
);

-- The audit trail. transition_key is unique per contract: the last guard against recording
-- (and so committing) the same transition twice.
CREATE TABLE contract_events (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    contract_id    BIGINT NOT NULL REFERENCES contracts (id) ON DELETE CASCADE,
    contract_ref   TEXT NOT NULL,
    kind           TEXT NOT NULL,
    effective_on   DATE NOT NULL,
    line_ref       TEXT,
    details        JSONB NOT NULL,
    transition_key TEXT NOT NULL,
    run_id         TEXT,
    recorded_at_ms BIGINT NOT NULL,
    UNIQUE (contract_id, transition_key)
);

-- Every zone that has contracts, so a tick learns the zones without reading contracts.
CREATE TABLE contract_zones (
    time_zone TEXT PRIMARY KEY
);

-- The run ledger: one row per (job, zone, business date).
CREATE TABLE job_runs (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job            TEXT NOT NULL,
    zone           TEXT NOT NULL,
    business_date  DATE NOT NULL,
    run_id         TEXT NOT NULL,
    owner          TEXT NOT NULL,
    lease_until_ms BIGINT NOT NULL,
    status         TEXT NOT NULL,
    attempts       BIGINT NOT NULL DEFAULT 1,
    cursor_due     DATE,
    cursor_id      BIGINT,
    batches        BIGINT NOT NULL DEFAULT 0,
    examined       BIGINT NOT NULL DEFAULT 0,
    changed        BIGINT NOT NULL DEFAULT 0,
    skipped        BIGINT NOT NULL DEFAULT 0,
    error          TEXT,
    started_at_ms  BIGINT NOT NULL,
    finished_at_ms BIGINT,
    UNIQUE (job, zone, business_date)
);

CREATE INDEX job_runs_business_date ON job_runs (business_date, status);
