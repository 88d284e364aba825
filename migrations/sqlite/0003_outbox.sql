-- The outbox (src/storage/outbox.rs): every event row carries the contract's export record
-- after the change; webhook endpoints keep their cursor in the feed; deliveries record every
-- attempt. SQLite has one writer at a time, so event ids are assigned in commit order and an
-- event's feed position is its id alone (cursor_tx is always 0).

-- NULL for events recorded before the outbox existed.
ALTER TABLE contract_events ADD COLUMN contract_record TEXT;

-- One row per endpoint the outbox has seen: where its fan-out has got to in the feed
-- ((cursor_tx, cursor_id): the position of the last event passed), and whether it is
-- disabled (e.g. after a 410 Gone).
CREATE TABLE webhook_endpoints (
    name            TEXT PRIMARY KEY,
    cursor_tx       INTEGER NOT NULL,
    cursor_id       INTEGER NOT NULL,
    disabled_at_ms  INTEGER,
    disabled_reason TEXT,
    created_at_ms   INTEGER NOT NULL
);

-- One row per (endpoint, event) to send. next_attempt_ms is NULL once delivered or failed;
-- the lease (lease_owner, lease_until_ms) is held by the process attempting it.
CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY,
    endpoint        TEXT NOT NULL,
    event_id        INTEGER NOT NULL REFERENCES contract_events (id) ON DELETE CASCADE,
    contract_id     INTEGER NOT NULL,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER,
    lease_owner     TEXT,
    lease_until_ms  INTEGER,
    last_status     INTEGER,
    last_error      TEXT,
    last_attempt_ms INTEGER,
    delivered_at_ms INTEGER,
    created_at_ms   INTEGER NOT NULL,
    UNIQUE (endpoint, event_id)
);

-- The claim's candidates and the backlog's pending count: only pending rows, so the index
-- stays as small as the backlog, in event order, so that a claim (ORDER BY event_id LIMIT n)
-- walks the oldest pending deliveries and stops after n instead of sorting the whole backlog
-- (ordered by next attempt, a claim read and sorted every pending row: 37 ms at 6,000).
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (event_id)
    WHERE status = 'pending';
-- The claim's per-contract order check (an earlier undelivered delivery of the same contract
-- and endpoint holds the later ones back): only undelivered rows.
CREATE INDEX webhook_deliveries_undelivered ON webhook_deliveries (endpoint, contract_id, event_id)
    WHERE status <> 'delivered';
-- Requeueing failed deliveries, and the backlog's failed count.
CREATE INDEX webhook_deliveries_failed ON webhook_deliveries (endpoint)
    WHERE status = 'failed';
