-- Accounts and desktop work (issue 3): a phone that registers with screenpop keeps digest HA1s
-- (MD5 and SHA-256 of username:realm:password, RFC 8760), never the password; API sessions
-- keep only the SHA-256 of their bearer token, so a leaked table grants nothing; the agent's own
-- wrap-up code for a call lives next to the system's disposition.
ALTER TABLE agents ADD COLUMN sip_ha1_md5 TEXT;
ALTER TABLE agents ADD COLUMN sip_ha1_sha256 TEXT;
ALTER TABLE calls ADD COLUMN agent_disposition TEXT;
ALTER TABLE work_orders ADD COLUMN resolved_at BIGINT;

CREATE TABLE api_tokens (
    token_sha256 TEXT    NOT NULL PRIMARY KEY,
    agent_id     BIGINT  NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    created_at   BIGINT  NOT NULL,
    expires_at   BIGINT  NOT NULL
);
CREATE INDEX api_tokens_agent ON api_tokens (agent_id);
CREATE INDEX work_orders_status ON work_orders (status, created_at);
CREATE INDEX calls_dialed ON calls (dialed, offered_at);
