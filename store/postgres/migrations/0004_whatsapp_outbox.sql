-- 0004_whatsapp_outbox: the WhatsApp outbox (store/outbox.go).
--
-- Every message inserted into a WhatsApp conversation ('wa.<wa_id>:<phone
-- number id>') by a sender who is not the customer gets its outbox row from
-- a trigger, in the statement that inserts the message: Append and the
-- spool's drain (AppendSequenced) both, and only for rows really inserted
-- (a duplicate skipped by ON CONFLICT DO NOTHING fires nothing). So an acked
-- outbound message is in the outbox, and no outbox row exists without its
-- message.

ALTER TABLE outbox
    ADD COLUMN client_msg_id text        NOT NULL DEFAULT '',
    ADD COLUMN wamid         text,
    ADD COLUMN error_code    integer     NOT NULL DEFAULT 0,
    ADD COLUMN error_title   text        NOT NULL DEFAULT '',
    ADD COLUMN updated_at    timestamptz NOT NULL DEFAULT now();

-- The whatsapp actor's scan at start: the open entries, whatever their due
-- time (a 'sending' one waits for its reconciliation).
CREATE INDEX outbox_open_idx ON outbox (conversation_id, seq)
    WHERE status IN ('pending', 'sending');

-- The platform's last word on each sent message, by wamid, forward-only
-- (sent < delivered < read; failed ranks with read). A row may exist before
-- the outbox knows its wamid: a notification can overtake the Graph API's
-- answer; conversation_id/seq are set when the wamid is recorded. Every
-- writer upserts this row first, so its row lock orders a status and the
-- link of its wamid.
CREATE FUNCTION whatsapp_status_rank(s text) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE s WHEN 'sent' THEN 1 WHEN 'delivered' THEN 2 WHEN 'read' THEN 3 WHEN 'failed' THEN 3 ELSE 0 END;

CREATE TABLE whatsapp_statuses (
    wamid           text        PRIMARY KEY,
    conversation_id text,
    seq             bigint,
    client_msg_id   text,
    status          text        NOT NULL DEFAULT ''
                                CHECK (status IN ('', 'sent', 'delivered', 'read', 'failed')),
    error_code      integer     NOT NULL DEFAULT 0,
    error_title     text        NOT NULL DEFAULT '',
    status_at       timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION outbox_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outbox (conversation_id, seq, channel, payload, client_msg_id, next_attempt_at, created_at)
    VALUES (NEW.conversation_id, NEW.seq, 'whatsapp',
            jsonb_build_object('sender_id', NEW.sender_id, 'sender_role', NEW.sender_role, 'body', NEW.body),
            NEW.client_msg_id, NEW.created_at, NEW.created_at)
    ON CONFLICT ON CONSTRAINT outbox_message_key DO NOTHING;
    RETURN NULL;
END $$;

-- The WHEN clause is checked without calling the function: a web
-- conversation's message costs one string comparison.
CREATE TRIGGER messages_outbox AFTER INSERT ON messages
    FOR EACH ROW
    WHEN (NEW.sender_role <> 'customer' AND NEW.conversation_id ~ '^wa\.[^:]+:.+$')
    EXECUTE FUNCTION outbox_enqueue();
