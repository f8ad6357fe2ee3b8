-- A queue's CRM link template, filled in for each call and sent with call.offered (NULL: none).
ALTER TABLE queues ADD COLUMN crm_url TEXT;
