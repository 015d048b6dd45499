-- 0002_agents: agent login (package auth): the agents who sign in with an
-- e-mail and a password, and their refresh tokens.

-- E-mails are stored lower case (the check) and so compared exactly: no
-- citext, which Supabase would need an extension enabled for.
CREATE TABLE agents (
    id            uuid        PRIMARY KEY,
    email         text        NOT NULL CONSTRAINT agents_email_key UNIQUE
                              CHECK (email = lower(email) AND email <> ''),
    name          text        NOT NULL DEFAULT '',
    password_hash text        NOT NULL,
    role          text        NOT NULL CHECK (role IN ('agent', 'admin')),
    disabled      boolean     NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Refresh tokens, by the SHA-256 of the token (the token itself is never
-- stored). A family is every token rotated from one login: reusing a spent
-- token revokes the family (UPDATE ... WHERE family = $1, served by the
-- index below).
CREATE TABLE refresh_tokens (
    hash       bytea       PRIMARY KEY CHECK (length(hash) = 32),
    family     uuid        NOT NULL,
    agent_id   uuid        NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    used_at    timestamptz,
    revoked    boolean     NOT NULL DEFAULT false,
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family);

-- Disabling an agent revokes its tokens (WHERE agent_id = $1).
CREATE INDEX refresh_tokens_agent_idx ON refresh_tokens (agent_id);
