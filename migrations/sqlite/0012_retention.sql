-- Recording retention. A queue keeps its calls' recordings keep_recordings_days days (NULL: the
-- profile's [retention] keep_days; 0 there keeps them for ever). An expired recording's row
-- stays, with when it expired and, when it was moved rather than deleted, where to: the
-- contact log keeps pointing at it and says what became of the audio.
ALTER TABLE queues ADD COLUMN keep_recordings_days INTEGER;
ALTER TABLE recordings ADD COLUMN expired_at INTEGER;
ALTER TABLE recordings ADD COLUMN archived_to TEXT;
-- A node removing the file holds this lease (epoch ms); one that died mid-way leaves it to
-- expire, and another node takes the recording again after an hour.
ALTER TABLE recordings ADD COLUMN expiry_claimed_at INTEGER;
-- What became of a call's recording when it is not simply there: 'failed' (the disk refused
-- it; what was written stays playable), 'expired' (deleted by retention) or 'archived'
-- (moved to the archive folder by retention).
ALTER TABLE calls ADD COLUMN recording_status TEXT
    CHECK (recording_status IN ('failed', 'expired', 'archived'));
CREATE INDEX recordings_created_at ON recordings (created_at);
