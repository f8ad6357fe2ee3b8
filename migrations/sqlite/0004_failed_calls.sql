-- no-transaction
-- The contact log keeps "failed" (screenpop took the call but could not put it through: the
-- agent's phone answered without usable SDP, a loop, an unresolvable agent host) apart from
-- "missed" (nobody answered). SQLite cannot change a CHECK constraint in place, so the table is
-- rebuilt with the same columns, rows and indexes. Foreign keys are switched off around it
-- (work orders point at calls and must keep pointing at the same rows), which SQLite only allows
-- outside a transaction: hence no-transaction above, and an explicit transaction inside.
PRAGMA foreign_keys = OFF;
BEGIN;
CREATE TABLE calls_new (
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
    disposition  TEXT CHECK (disposition IN ('answered', 'missed', 'abandoned', 'rejected', 'failed')),
    recording_id INTEGER REFERENCES recordings (id) ON DELETE SET NULL,
    notes        TEXT,
    created_by   TEXT    NOT NULL,
    agent_disposition TEXT
);
INSERT INTO calls_new (id, sip_call_id, direction, caller_raw, caller_e164, dialed, customer_id,
                       agent_id, queue_id, offered_at, answered_at, ended_at, wait_secs,
                       talk_secs, disposition, recording_id, notes, created_by, agent_disposition)
SELECT id, sip_call_id, direction, caller_raw, caller_e164, dialed, customer_id, agent_id,
       queue_id, offered_at, answered_at, ended_at, wait_secs, talk_secs, disposition,
       recording_id, notes, created_by, agent_disposition
FROM calls;
DROP TABLE calls;
ALTER TABLE calls_new RENAME TO calls;
CREATE INDEX calls_offered_at ON calls (offered_at);
CREATE INDEX calls_customer ON calls (customer_id, offered_at);
CREATE INDEX calls_agent ON calls (agent_id, offered_at);
CREATE INDEX calls_caller ON calls (caller_e164);
CREATE UNIQUE INDEX calls_sip_call_id ON calls (sip_call_id);
CREATE INDEX calls_dialed ON calls (dialed, offered_at);
COMMIT;
PRAGMA foreign_keys = ON;
