-- Claiming a campaign's next attempts reads them in due order and sweeps the expired ones:
-- both by index, not by sorting or scanning every pending row of the campaign (100,000 in a
-- broadcast: each claim sorted them all).
CREATE INDEX campaign_attempts_claim ON campaign_attempts (campaign_id, status, next_attempt_at, id);
CREATE INDEX campaign_attempts_expiry ON campaign_attempts (campaign_id, status, expires_at);
DROP INDEX campaign_attempts_campaign;
