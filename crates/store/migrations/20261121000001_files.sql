-- Uploaded files' metadata; the bytes live in DATA_DIR/files/<id>.
CREATE TABLE files (
    id TEXT PRIMARY KEY NOT NULL,
    tenant TEXT NOT NULL,
    display_name TEXT,
    mime_type TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    sha256_hex TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
) STRICT;

CREATE INDEX files_tenant ON files (tenant, created_ms DESC, id DESC);
CREATE INDEX files_expiry ON files (expires_ms);
