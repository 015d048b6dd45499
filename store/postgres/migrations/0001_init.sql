-- 0001_init: the chat log and the state around it.
--
-- Every table lives in the connection's current schema (the first of
-- search_path), never a hard-coded one, so that tests and tenants can keep
-- separate schemas in one database.

-- One row per conversation. head is the sequencer of record: Append bumps it
-- in the same statement that inserts the messages, so head is always the
-- highest seq in messages for that conversation.
CREATE TABLE conversations (
    id          text        PRIMARY KEY,
    channel     text        NOT NULL DEFAULT 'web',
    customer    text        NOT NULL DEFAULT '',
    status      text        NOT NULL DEFAULT 'open'
                            CONSTRAINT conversations_status_check
                            CHECK (status IN ('open', 'pending', 'resolved')),
    assignee    text,
    head        bigint      NOT NULL DEFAULT 0 CHECK (head >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 70);
-- Every Append updates head and updated_at of each conversation it touches.
-- Neither column is indexed and fillfactor leaves room on each page, so those
-- updates are HOT (no index writes): keep it that way when adding indexes.

-- The agents' panel lists a queue: the open/pending conversations of an
-- assignee (or the unassigned ones, assignee IS NULL). Resolved
-- conversations are the bulk of the table and are never listed that way, so
-- the index leaves them out. A queue is small; it is sorted by updated_at
-- after the lookup rather than by indexing updated_at (see above).
CREATE INDEX conversations_queue_idx
    ON conversations (assignee, status)
    WHERE status <> 'resolved';

-- A customer's conversations (the webhook finds the conversation of an
-- incoming WhatsApp number; the panel shows a customer's history).
CREATE INDEX conversations_customer_idx ON conversations (customer);

-- The log. The primary key (conversation_id, seq) serves Range (history
-- paging: WHERE conversation_id = $1 AND seq > $2 ORDER BY seq LIMIT $3) and
-- makes a seq impossible to give twice. The unique (conversation_id,
-- client_msg_id) is the final word on idempotency: Append looks duplicates up
-- through it, and AppendSequenced's ON CONFLICT targets it.
--
-- No foreign key to conversations: the only writers (Append,
-- AppendSequenced) upsert the conversation row in the same statement, and
-- the check would cost every message an extra index probe and row lock on
-- the hottest path (about a tenth of the insert's time, measured).
CREATE TABLE messages (
    conversation_id text        NOT NULL,
    seq             bigint      NOT NULL CHECK (seq > 0),
    client_msg_id   text        NOT NULL CHECK (client_msg_id <> ''),
    sender_id       text        NOT NULL,
    sender_role     text        NOT NULL,
    body            jsonb       NOT NULL,
    created_at      timestamptz NOT NULL,
    CONSTRAINT messages_pkey PRIMARY KEY (conversation_id, seq),
    CONSTRAINT messages_client_msg_id_key UNIQUE (conversation_id, client_msg_id)
);

-- Read cursors: how far each user has read each conversation. The primary
-- key serves both SetReadCursor's upsert and ReadCursors (WHERE
-- conversation_id = $1), being a prefix scan on conversation_id.
CREATE TABLE read_cursors (
    conversation_id text        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id         text        NOT NULL,
    seq             bigint      NOT NULL CHECK (seq >= 0),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, user_id)
);

-- "Unread for me": the panel asks for a user's cursors across conversations.
CREATE INDEX read_cursors_user_idx ON read_cursors (user_id);

-- Chatbot state per customer conversation, persisted when the conversation
-- actor goes idle and read back when it is rehydrated (by primary key).
CREATE TABLE chatbot_sessions (
    conversation_id text        PRIMARY KEY,
    customer        text        NOT NULL,
    state           jsonb       NOT NULL DEFAULT '{}'::jsonb,
    expires_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- The expiry sweep (every 5 min): WHERE expires_at < now().
CREATE INDEX chatbot_sessions_expires_idx ON chatbot_sessions (expires_at);

-- A customer's session, for the webhook that only knows the phone number.
CREATE INDEX chatbot_sessions_customer_idx ON chatbot_sessions (customer);

-- Outbound messages to a channel (WhatsApp Cloud API), written in the same
-- transaction as the message they carry so that none is lost if the sender
-- is down; the whatsapp actor delivers them and records the outcome.
CREATE TABLE outbox (
    id              bigserial   PRIMARY KEY,
    conversation_id text        NOT NULL,
    seq             bigint      NOT NULL,
    channel         text        NOT NULL,
    payload         jsonb       NOT NULL,
    status          text        NOT NULL DEFAULT 'pending'
                                CONSTRAINT outbox_status_check
                                CHECK (status IN ('pending', 'sending', 'sent', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- One delivery per message and channel: enqueueing is idempotent.
    CONSTRAINT outbox_message_key UNIQUE (conversation_id, seq, channel)
);

-- The sender's poll: the due pending entries, oldest due first
-- (WHERE status = 'pending' AND next_attempt_at <= now() ORDER BY
-- next_attempt_at). Sent entries are most of the table and never polled.
CREATE INDEX outbox_due_idx ON outbox (next_attempt_at) WHERE status = 'pending';
