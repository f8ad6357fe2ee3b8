-- A queue's own music for waiting callers (a WAV on the server), in place of the profile's
-- queue_music (NULL: the profile's, or ringback).
ALTER TABLE queues ADD COLUMN music TEXT;
