-- The outbox (src/storage/outbox.rs): every event row carries the contract's export record
-- after the change and the id of the transaction that wrote it; webhook endpoints keep their
-- cursor in the feed; deliveries record every attempt.

-- NULL for events recorded before the outbox existed.
ALTER TABLE contract_events ADD COLUMN contract_record JSONB;

-- The transaction that recorded the event. Sequence values are taken before commit, so ids
-- alone are not in commit order; the feed is ordered by (tx_id, id) and shows only events of
-- transactions older than every transaction still running. Rows already there all get this
-- migration's transaction id (the default is stable: evaluated once, no table rewrite), which
-- is smaller than that of any later transaction.
ALTER TABLE contract_events ADD COLUMN tx_id XID8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX contract_events_feed ON contract_events (tx_id, id);

-- One row per endpoint the outbox has seen: where its fan-out has got to in the feed
-- ((cursor_tx, cursor_id): the position of the last event passed, tx as a bigint), and
-- whether it is disabled (e.g. after a 410 Gone).
CREATE TABLE webhook_endpoints (
    name            TEXT PRIMARY KEY,
    cursor_tx       BIGINT NOT NULL,
    cursor_id       BIGINT NOT NULL,
    disabled_at_ms  BIGINT,
    disabled_reason TEXT,
    created_at_ms   BIGINT NOT NULL
);

-- One row per (endpoint, event) to send. next_attempt_ms is NULL once delivered or failed;
-- the lease (lease_owner, lease_until_ms) is held by the process attempting it.
CREATE TABLE webhook_deliveries (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint        TEXT NOT NULL,
    event_id        BIGINT NOT NULL REFERENCES contract_events (id) ON DELETE CASCADE,
    contract_id     BIGINT NOT NULL,
    status          TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT,
    lease_owner     TEXT,
    lease_until_ms  BIGINT,
    last_status     BIGINT,
    last_error      TEXT,
    last_attempt_ms BIGINT,
    delivered_at_ms BIGINT,
    created_at_ms   BIGINT NOT NULL,
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
