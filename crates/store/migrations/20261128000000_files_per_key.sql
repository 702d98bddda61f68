-- File names are unique per API key, not across keys, and each file's bytes live under a
-- name of their own (`blob`, relative to DATA_DIR/files) that no other upload can take.
-- Files kept before this change keep their bytes at DATA_DIR/files/<id>.
CREATE TABLE files_per_key (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    blob TEXT NOT NULL,
    display_name TEXT,
    mime_type TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    sha256_hex TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, id)
) STRICT;

INSERT INTO files_per_key (tenant, id, blob, display_name, mime_type, size_bytes, sha256_hex,
                           created_ms, expires_ms)
SELECT tenant, id, id, display_name, mime_type, size_bytes, sha256_hex, created_ms, expires_ms
FROM files;

DROP TABLE files;
ALTER TABLE files_per_key RENAME TO files;
CREATE INDEX files_tenant ON files (tenant, created_ms DESC, id DESC);
CREATE INDEX files_expiry ON files (expires_ms);
