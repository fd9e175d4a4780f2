-- API keys for machines (rest_auth.c): "tsk_<id>_<secret>". Only the SHA-256
-- of the secret is kept: the secret is 256 random bits, so a fast hash is
-- enough (a slow one is for guessable passwords) and a stolen table gives no
-- key. A revoked key stays listed (who had it, until when).
CREATE TABLE api_keys (
    id            text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{16}$'),
    name          text NOT NULL,
    secret_sha256 text NOT NULL,
    role          text NOT NULL CHECK (role IN ('admin', 'write', 'read')),
    -- NULL: every study; else only the studies carrying one of these labels
    labels        text[],
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    text NOT NULL DEFAULT '',
    revoked_at    timestamptz
);
