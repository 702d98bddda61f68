-- Runs owned by replicas: the owner renews `lease_until_ms`; a run whose lease ended is failed
-- by whichever replica notices. `cancel_requested` asks the owner to stop it.
ALTER TABLE interactions ADD COLUMN owner TEXT;
ALTER TABLE interactions ADD COLUMN lease_until_ms INTEGER;
ALTER TABLE interactions ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
-- What the turn's inputs resolved to (documents as text, uploads as content-addressed media).
ALTER TABLE interactions ADD COLUMN resolved_input TEXT;

CREATE INDEX interactions_owner ON interactions (owner) WHERE status IN ('in_progress', 'queued');
CREATE INDEX interactions_previous ON interactions (previous_interaction_id);

-- The live event log of a running interaction, read by replicas that do not run it.
CREATE TABLE interaction_events (
    id TEXT NOT NULL REFERENCES interactions (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    event TEXT NOT NULL,
    PRIMARY KEY (id, seq)
) STRICT;

-- Tenants whose cached KV state every replica must drop.
CREATE TABLE kv_forgets (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    at_ms INTEGER NOT NULL
) STRICT;
