-- Webhooks: where events are POSTed, and every delivery, written before its first attempt so
-- that a restart loses none. Deliveries of one subject (a call, an agent, a work order) to one
-- webhook go out in id order: only the oldest pending one of a subject has a next_attempt_at,
-- the others wait with NULL until it is delivered or given up.
CREATE TABLE webhooks (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    url        TEXT    NOT NULL,
    -- Event type names separated by spaces, or '*' for every event.
    events     TEXT    NOT NULL,
    -- Kept as given: it keys the HMAC of every delivery.
    secret     TEXT    NOT NULL,
    created_by TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id      INTEGER NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_type      TEXT    NOT NULL,
    -- What the order is kept within: 'call:<id>', 'agent:<id>', 'work_order:<id>' or ''.
    subject         TEXT    NOT NULL,
    body            TEXT    NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    next_attempt_at INTEGER,
    last_attempt_at INTEGER,
    last_status     INTEGER,
    last_error      TEXT,
    delivered_at    INTEGER
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (webhook_id, next_attempt_at)
    WHERE status = 'pending';
-- The sender's "when is the next one due", across webhooks.
CREATE INDEX webhook_deliveries_next ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_subject ON webhook_deliveries (webhook_id, subject, id)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_status ON webhook_deliveries (webhook_id, status, id);
CREATE INDEX webhook_deliveries_created ON webhook_deliveries (created_at);
