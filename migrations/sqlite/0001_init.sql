-- screenpop schema v1 (SQLite). Times are Unix epoch milliseconds (INTEGER) so the same
-- queries run on SQLite and PostgreSQL through sqlx's Any driver; flags are 0/1 integers
-- because the Any driver cannot decode SQLite's BOOLEAN.

CREATE TABLE agents (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    username      TEXT    NOT NULL UNIQUE,
    display_name  TEXT    NOT NULL,
    role          TEXT    NOT NULL CHECK (role IN ('agent', 'supervisor', 'admin')),
    password_hash TEXT    NOT NULL,
    sip_uri       TEXT,
    sip_username  TEXT UNIQUE,
    sip_password  TEXT,
    skills        TEXT    NOT NULL DEFAULT '[]',
    created_at    INTEGER NOT NULL
);

CREATE TABLE queues (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    name              TEXT    NOT NULL UNIQUE,
    dialed_numbers    TEXT    NOT NULL DEFAULT '[]',
    ring_timeout_secs INTEGER NOT NULL DEFAULT 20,
    max_wait_secs     INTEGER NOT NULL DEFAULT 120,
    wrap_up_secs      INTEGER NOT NULL DEFAULT 10,
    required_skills   TEXT    NOT NULL DEFAULT '[]',
    is_default        INTEGER NOT NULL DEFAULT 0 CHECK (is_default IN (0, 1))
);

CREATE TABLE agent_queues (
    agent_id INTEGER NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    queue_id INTEGER NOT NULL REFERENCES queues (id) ON DELETE CASCADE,
    PRIMARY KEY (agent_id, queue_id)
);

CREATE TABLE customers (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    code              TEXT    NOT NULL UNIQUE,
    name              TEXT    NOT NULL,
    company           TEXT,
    tier              TEXT    NOT NULL DEFAULT 'regular' CHECK (tier IN ('vip', 'key', 'regular')),
    birthday          TEXT,
    anniversary       TEXT,
    address           TEXT,
    notes             TEXT,
    assigned_agent_id INTEGER REFERENCES agents (id) ON DELETE SET NULL,
    opt_out_sms       INTEGER NOT NULL DEFAULT 0 CHECK (opt_out_sms IN (0, 1)),
    opt_out_voice     INTEGER NOT NULL DEFAULT 0 CHECK (opt_out_voice IN (0, 1)),
    opt_out_email     INTEGER NOT NULL DEFAULT 0 CHECK (opt_out_email IN (0, 1)),
    created_via       TEXT    NOT NULL DEFAULT 'manual' CHECK (created_via IN ('manual', 'call', 'import', 'api')),
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
CREATE INDEX customers_name ON customers (name);

CREATE TABLE customer_phones (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id INTEGER NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    raw         TEXT    NOT NULL,
    e164        TEXT,
    national    TEXT    NOT NULL,
    label       TEXT
);
CREATE INDEX customer_phones_e164 ON customer_phones (e164);
CREATE INDEX customer_phones_national ON customer_phones (national);
CREATE INDEX customer_phones_customer ON customer_phones (customer_id);

CREATE TABLE recordings (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    path        TEXT    NOT NULL UNIQUE,
    duration_ms INTEGER NOT NULL,
    size_bytes  INTEGER NOT NULL,
    sha256      TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE calls (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    sip_call_id  TEXT    NOT NULL,
    direction    TEXT    NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    caller_raw   TEXT    NOT NULL,
    caller_e164  TEXT,
    dialed       TEXT    NOT NULL,
    customer_id  INTEGER REFERENCES customers (id) ON DELETE SET NULL,
    agent_id     INTEGER REFERENCES agents (id) ON DELETE SET NULL,
    queue_id     INTEGER REFERENCES queues (id) ON DELETE SET NULL,
    offered_at   INTEGER NOT NULL,
    answered_at  INTEGER,
    ended_at     INTEGER,
    wait_secs    INTEGER,
    talk_secs    INTEGER,
    disposition  TEXT CHECK (disposition IN ('answered', 'missed', 'abandoned', 'rejected')),
    recording_id INTEGER REFERENCES recordings (id) ON DELETE SET NULL,
    notes        TEXT,
    created_by   TEXT    NOT NULL
);
CREATE INDEX calls_offered_at ON calls (offered_at);
CREATE INDEX calls_customer ON calls (customer_id, offered_at);
CREATE INDEX calls_agent ON calls (agent_id, offered_at);
CREATE INDEX calls_caller ON calls (caller_e164);
CREATE UNIQUE INDEX calls_sip_call_id ON calls (sip_call_id);

CREATE TABLE work_orders (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    kind              TEXT    NOT NULL CHECK (kind IN ('callback', 'complaint', 'service', 'sales')),
    status            TEXT    NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'in_progress', 'resolved', 'closed')),
    priority          INTEGER NOT NULL DEFAULT 3,
    title             TEXT    NOT NULL,
    description       TEXT,
    assignee_agent_id INTEGER REFERENCES agents (id) ON DELETE SET NULL,
    queue_id          INTEGER REFERENCES queues (id) ON DELETE SET NULL,
    due_at            INTEGER,
    call_id           INTEGER REFERENCES calls (id) ON DELETE SET NULL,
    customer_id       INTEGER REFERENCES customers (id) ON DELETE SET NULL,
    created_by        TEXT    NOT NULL,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
CREATE INDEX work_orders_customer ON work_orders (customer_id, status);
CREATE INDEX work_orders_assignee ON work_orders (assignee_agent_id, status);
CREATE UNIQUE INDEX work_orders_one_callback_per_call ON work_orders (call_id, kind);

CREATE TABLE work_order_history (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    work_order_id INTEGER NOT NULL REFERENCES work_orders (id) ON DELETE CASCADE,
    at            INTEGER NOT NULL,
    actor         TEXT    NOT NULL,
    field         TEXT    NOT NULL,
    old_value     TEXT,
    new_value     TEXT
);
CREATE INDEX work_order_history_order ON work_order_history (work_order_id, at);

CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    actor   TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    subject TEXT    NOT NULL,
    detail  TEXT
);
CREATE INDEX audit_log_at ON audit_log (at);
