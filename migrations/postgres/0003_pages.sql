-- The agent and supervisor pages (issue 8): accounts and queues can be deactivated (history keeps
-- their names), each user's language is remembered, each queue has its own service-level
-- threshold for the wallboard, and the audit log records the address an action came from.
ALTER TABLE agents ADD COLUMN active BIGINT NOT NULL DEFAULT 1 CHECK (active IN (0, 1));
ALTER TABLE agents ADD COLUMN locale TEXT;
ALTER TABLE queues ADD COLUMN service_level_secs BIGINT NOT NULL DEFAULT 20;
ALTER TABLE queues ADD COLUMN active BIGINT NOT NULL DEFAULT 1 CHECK (active IN (0, 1));
ALTER TABLE audit_log ADD COLUMN source TEXT;
CREATE INDEX audit_log_action ON audit_log (action, at);
