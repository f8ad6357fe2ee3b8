-- The contact log keeps "failed" (screenpop took the call but could not put it through) apart
-- from "missed" (nobody answered).
ALTER TABLE calls DROP CONSTRAINT IF EXISTS calls_disposition_check;
ALTER TABLE calls ADD CONSTRAINT calls_disposition_check
    CHECK (disposition IN ('answered', 'missed', 'abandoned', 'rejected', 'failed'));
