-- A queue's post-call satisfaction survey. When the agent hangs up first, the caller stays on
-- the line, hears survey_prompt (a WAV on the server), presses one digit from 1 to 9 within
-- survey_timeout_secs of the prompt's end, and hears survey_thanks (if set) before the hang-up.
-- A NULL prompt: the queue has no survey.
ALTER TABLE queues ADD COLUMN survey_prompt TEXT;
ALTER TABLE queues ADD COLUMN survey_thanks TEXT;
ALTER TABLE queues ADD COLUMN survey_timeout_secs INTEGER NOT NULL DEFAULT 8;
-- When the caller was offered the survey (epoch ms; NULL: not offered). With survey_score
-- (NULL: no digit pressed) it gives the response rate per agent and queue.
ALTER TABLE calls ADD COLUMN survey_offered_at BIGINT;
