-- 0005_workflow: the conversation workflow (issue 13): what the agents'
-- inbox shows of a conversation, canned replies, agents' capacities, and
-- the full-text index over messages. The inbox actor is the only writer of
-- the columns added here; Append keeps writing head and updated_at alone.

ALTER TABLE conversations
    ADD COLUMN tags          text[]      NOT NULL DEFAULT '{}',
    ADD COLUMN last_message  jsonb,
    ADD COLUMN last_activity timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN version       bigint      NOT NULL DEFAULT 0 CHECK (version >= 0),
    -- The staff's read cursors ({"user": seq}), a copy kept with the state
    -- so that a list's unread counts need no join (read_cursors stays the
    -- record).
    ADD COLUMN reads         jsonb       NOT NULL DEFAULT '{}'::jsonb;

-- A conversation Append creates before the inbox has seen it is pending
-- until then, not open: the bot answers first.
ALTER TABLE conversations ALTER COLUMN status SET DEFAULT 'pending';

-- Lists: newest activity first, (last_activity, id) is the page cursor
-- (both descending).
-- Append never writes these columns, so its updates stay HOT.
CREATE INDEX conversations_activity_idx ON conversations (last_activity DESC, id DESC);
-- changed_since: the conversations changed after a version, in order.
CREATE INDEX conversations_version_idx ON conversations (version);
-- The tag filter (tags @> ARRAY[$1]).
CREATE INDEX conversations_tags_idx ON conversations USING gin (tags);

-- Full-text search over the messages' text. The 'simple' configuration
-- (lower case, no stemming, no stop words) serves Spanish and English alike.
CREATE INDEX messages_text_fts_idx ON messages
    USING gin (to_tsvector('simple', coalesce(body->>'text', '')));

-- Short code → text with placeholders ({{customer}}, {{agent}}).
CREATE TABLE canned_replies (
    code       text        PRIMARY KEY CHECK (code <> ''),
    text       text        NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- How many open conversations an agent may be assigned at once (handoff's
-- round-robin). Keyed by the user id agents connect with (the agents' id,
-- or a development user), so no foreign key to agents.
CREATE TABLE agent_capacities (
    agent_id text    PRIMARY KEY,
    capacity integer NOT NULL CHECK (capacity >= 0)
);
