-- Every agent who had a call, in turn (a transferred call lists each), with when they joined
-- and left it in milliseconds from the answer: the contact log's talk time per agent.
CREATE TABLE call_agents (
    call_id   BIGINT  NOT NULL REFERENCES calls(id) ON DELETE CASCADE,
    seq       INTEGER NOT NULL,
    agent_id  BIGINT  NOT NULL REFERENCES agents(id),
    start_ms  BIGINT  NOT NULL,
    end_ms    BIGINT  NOT NULL,
    PRIMARY KEY (call_id, seq)
);
CREATE INDEX call_agents_agent ON call_agents (agent_id);
