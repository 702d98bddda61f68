-- The PostgreSQL schema, equivalent to the SQLite one after all of migrations/ (same tables,
-- columns and meaning). Ids and tenants compare bytewise (COLLATE "C"), as in SQLite, so
-- orderings (file listings) do not depend on the server's locale.

-- One row per stored interaction: its own turn, not the whole chain. JSON columns are text,
-- written and read as they are in SQLite.
CREATE TABLE interactions (
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant TEXT COLLATE "C" NOT NULL,
    model TEXT NOT NULL,
    status TEXT NOT NULL,
    created BIGINT NOT NULL,
    updated BIGINT NOT NULL,
    previous_interaction_id TEXT COLLATE "C",
    input TEXT NOT NULL,
    output TEXT NOT NULL,
    usage TEXT NOT NULL,
    error TEXT,
    -- Runs owned by replicas: the owner renews `lease_until_ms`; a run whose lease ended is
    -- failed by whichever replica notices. `cancel_requested` asks the owner to stop it.
    owner TEXT,
    lease_until_ms BIGINT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    -- What the turn's inputs resolved to (documents as text, uploads as content-addressed media).
    resolved_input TEXT
);

CREATE INDEX interactions_tenant ON interactions (tenant, created);
CREATE INDEX interactions_unfinished ON interactions (status) WHERE status IN ('in_progress', 'queued');
CREATE INDEX interactions_owner ON interactions (owner) WHERE status IN ('in_progress', 'queued');
CREATE INDEX interactions_previous ON interactions (previous_interaction_id);

-- Uploaded files' metadata. Names are unique per API key; each file's bytes live under a
-- name of their own (`blob`, relative to DATA_DIR/files).
CREATE TABLE files (
    tenant TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    blob TEXT NOT NULL,
    display_name TEXT,
    mime_type TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    sha256_hex TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant, id)
);

CREATE INDEX files_tenant ON files (tenant, created_ms DESC, id DESC);
CREATE INDEX files_expiry ON files (expires_ms);

-- The live event log of a running interaction, read by replicas that do not run it.
CREATE TABLE interaction_events (
    id TEXT COLLATE "C" NOT NULL REFERENCES interactions (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    event TEXT NOT NULL,
    PRIMARY KEY (id, seq)
);

-- Tenants whose cached KV state every replica must drop.
CREATE TABLE kv_forgets (
    seq BIGSERIAL PRIMARY KEY,
    tenant TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);

CREATE INDEX kv_forgets_at ON kv_forgets (at_ms);
