-- 0003_whatsapp_inbound: the WhatsApp webhook's raw events and the contacts
-- (package actors, the inbound actor; store/postgres/whatsapp.go).

-- Every validly signed webhook POST, recorded before its 200 and keyed by
-- the SHA-256 of its body, so that a redelivery is the same row. A row is
-- pending until processed_at is set; the engine processes the pending ones
-- again at start (the partial index keeps that lookup small forever).
CREATE TABLE whatsapp_webhook_events (
    hash         text        PRIMARY KEY CHECK (length(hash) = 64),
    body         bytea       NOT NULL,
    received_at  timestamptz NOT NULL,
    processed_at timestamptz,
    problem      text        NOT NULL DEFAULT ''
);
CREATE INDEX whatsapp_webhook_events_pending_idx
    ON whatsapp_webhook_events (received_at)
    WHERE processed_at IS NULL;

-- Customers by WhatsApp id. last_inbound_at only moves forward (GREATEST
-- in the upsert); the outbound side reads it for the 24-hour window.
CREATE TABLE whatsapp_contacts (
    wa_id           text        PRIMARY KEY,
    name            text        NOT NULL DEFAULT '',
    phone_number_id text        NOT NULL DEFAULT '',
    last_inbound_at timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
