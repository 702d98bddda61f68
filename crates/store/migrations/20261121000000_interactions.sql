-- One row per stored interaction: its own turn, not the whole chain.
CREATE TABLE interactions (
    id TEXT PRIMARY KEY NOT NULL,
    tenant TEXT NOT NULL,
    model TEXT NOT NULL,
    status TEXT NOT NULL,
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    previous_interaction_id TEXT,
    input TEXT NOT NULL,
    output TEXT NOT NULL,
    usage TEXT NOT NULL,
    error TEXT
) STRICT;

CREATE INDEX interactions_tenant ON interactions (tenant, created);
CREATE INDEX interactions_unfinished ON interactions (status) WHERE status IN ('in_progress', 'queued');
