-- Campaigns (issue 12): greetings on birthdays and anniversaries and broadcasts to customer
-- groups, by SMS or by a short voice call. The attempts table is the campaign's queue and its
-- memory: one row per customer and occasion, created before anything is sent, so "nobody is
-- greeted twice for the same occasion" is a unique key the database enforces across restarts,
-- runs at once and nodes, not a check in one process's memory.
ALTER TABLE customers ADD COLUMN birthday_calendar TEXT NOT NULL DEFAULT 'gregorian'
    CHECK (birthday_calendar IN ('gregorian', 'lunar'));

CREATE TABLE customer_tags (
    customer_id INTEGER NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    tag         TEXT    NOT NULL,
    PRIMARY KEY (customer_id, tag)
);
CREATE INDEX customer_tags_tag ON customer_tags (tag);

CREATE TABLE campaigns (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    name            TEXT    NOT NULL UNIQUE,
    kind            TEXT    NOT NULL CHECK (kind IN ('birthday', 'anniversary', 'broadcast')),
    channel         TEXT    NOT NULL CHECK (channel IN ('sms', 'voice', 'sms_then_voice')),
    -- The campaign as the API took it (template, audience, schedule, limits), in JSON: the
    -- runner reads it whole, and a new setting needs no migration.
    spec            TEXT    NOT NULL,
    state           TEXT    NOT NULL DEFAULT 'draft'
        CHECK (state IN ('draft', 'active', 'paused', 'done')),
    -- When the next run plans its audience (NULL: no run is scheduled).
    next_run_at     INTEGER,
    last_run_at     INTEGER,
    created_by      TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX campaigns_due ON campaigns (state, next_run_at);

CREATE TABLE campaign_attempts (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    campaign_id     INTEGER NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    customer_id     INTEGER NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    -- 'birthday:2026', 'anniversary:2026' (shared by every campaign of that kind: one greeting
    -- per customer and year) or 'campaign:<id>:<run>' for a broadcast.
    occasion        TEXT    NOT NULL,
    number          TEXT    NOT NULL,
    -- The channel of the next (or last) try: a fallback from SMS to voice changes it.
    channel         TEXT    NOT NULL CHECK (channel IN ('sms', 'voice')),
    body            TEXT    NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sending', 'sent', 'delivered', 'answered', 'busy',
                          'no_answer', 'failed', 'skipped')),
    tries           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    -- Who claimed it to send (a node's id) and when: a node that dies mid-send leaves a claim
    -- the restart can take back.
    claimed_by      TEXT,
    claimed_at      INTEGER,
    -- After this the attempt is not sent (a greeting's local day is over); NULL: no end.
    expires_at      INTEGER,
    -- The SMS center's message id, to match its delivery receipt.
    message_id      TEXT,
    reason          TEXT,
    -- The contact log of the last try.
    call_id         INTEGER REFERENCES calls (id) ON DELETE SET NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE UNIQUE INDEX campaign_attempts_once ON campaign_attempts (customer_id, occasion);
CREATE INDEX campaign_attempts_due ON campaign_attempts (status, next_attempt_at);
CREATE INDEX campaign_attempts_campaign ON campaign_attempts (campaign_id, status);
CREATE INDEX campaign_attempts_message ON campaign_attempts (message_id);

-- A contact log made by a campaign says which, by what channel and how it went ('delivered',
-- 'busy', 'failed: 480 Temporarily Unavailable', …); the satisfaction survey's score too.
ALTER TABLE calls ADD COLUMN campaign_id INTEGER REFERENCES campaigns (id) ON DELETE SET NULL;
ALTER TABLE calls ADD COLUMN channel TEXT;
ALTER TABLE calls ADD COLUMN result TEXT;
ALTER TABLE calls ADD COLUMN survey_score INTEGER;
CREATE INDEX calls_campaign ON calls (campaign_id);
