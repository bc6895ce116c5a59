-- Signed webhooks (issue 19; API.md "v1 additions", Webhooks).

-- Where alert notifications go. Times are microseconds since the Unix epoch.
CREATE TABLE webhook_endpoints (
    -- 32 hex digits (a random UUID without dashes).
    id              TEXT PRIMARY KEY,
    url             TEXT NOT NULL,
    description     TEXT NOT NULL DEFAULT '',
    -- JSON arrays. `kinds`/`skus` NULL: every kind / every SKU.
    events          TEXT NOT NULL,
    kinds           TEXT,
    skus            TEXT,
    format          TEXT NOT NULL CONSTRAINT webhook_format_known CHECK (format IN ('standard', 'slack')),
    enabled         BIGINT NOT NULL DEFAULT 1 CONSTRAINT webhook_enabled_bool CHECK (enabled IN (0, 1)),
    disabled_reason TEXT CONSTRAINT webhook_disabled_reason_known
        CHECK (disabled_reason IN ('gone', 'failing', 'admin')),
    -- The signing secret, encrypted (AES-256-GCM, "v1:" + base64 of nonce
    -- and ciphertext; the endpoint id is the associated data). The previous
    -- one is kept, and signed with too, until previous_secret_until_us.
    secret          TEXT NOT NULL,
    previous_secret TEXT,
    previous_secret_until_us BIGINT,
    secret_rotated_us BIGINT,
    -- Since when every attempt has failed (NULL after a success): past
    -- SKUWATCH_WEBHOOK_DISABLE_AFTER_SECS the endpoint is disabled.
    failing_since_us BIGINT,
    -- The per-endpoint rate cap's current minute and how many messages
    -- it has started in it.
    window_start_us BIGINT NOT NULL DEFAULT 0,
    window_count    BIGINT NOT NULL DEFAULT 0,
    -- `sku.changed` is fed from the events table, not written by the write
    -- path: the last event id turned into deliveries for this endpoint.
    events_cursor   BIGINT NOT NULL DEFAULT 0,
    created_us      BIGINT NOT NULL,
    updated_us      BIGINT NOT NULL
);

-- The transactional outbox: one row per message per endpoint, written in
-- the transaction that raised, acknowledged or resolved the alert, with
-- its body frozen then.
CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    -- The `webhook-id` header: the same on every retry.
    message_id      TEXT NOT NULL UNIQUE,
    -- No foreign key: the write path's INSERT would then lock the
    -- endpoint row (key share) and fail a stock write racing a DELETE.
    -- The endpoint's deletion deletes its rows; the upkeep deletes any
    -- a racing write left behind.
    endpoint_id     TEXT NOT NULL,
    type            TEXT NOT NULL,
    -- {"type", "timestamp", "data"}: the standard body; the Slack form is
    -- rendered from it when sent.
    body            TEXT NOT NULL,
    status          TEXT NOT NULL CONSTRAINT webhook_delivery_status_known
        CHECK (status IN ('pending', 'delivered', 'failed', 'digested', 'cancelled')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_us BIGINT,
    -- A worker's claim: nobody else attempts the row before this time.
    lease_until_us  BIGINT NOT NULL DEFAULT 0,
    last_attempt_us BIGINT,
    last_status     BIGINT,
    last_error      TEXT,
    alert_id        BIGINT,
    event_id        BIGINT,
    -- A `digested` row: the digest message that carried it.
    digest_id       BIGINT,
    created_us      BIGINT NOT NULL,
    ended_us        BIGINT
);
-- The workers' question: what is due.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_us) WHERE status = 'pending';
-- A rate-capped endpoint's first attempts, folded into a digest.
CREATE INDEX webhook_deliveries_fresh ON webhook_deliveries (endpoint_id, id)
    WHERE status = 'pending' AND attempts = 0;
-- The delivery log, newest first.
CREATE INDEX webhook_deliveries_log ON webhook_deliveries (endpoint_id, id);
-- Pruning ended deliveries.
CREATE INDEX webhook_deliveries_ended ON webhook_deliveries (ended_us) WHERE status <> 'pending';

-- Who changed which endpoint's configuration, when, and how. Kept after
-- the endpoint is deleted.
CREATE TABLE webhook_audit (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint_id TEXT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    -- JSON: the fields as set (never the secret).
    detail      TEXT NOT NULL,
    at_us       BIGINT NOT NULL
);
CREATE INDEX webhook_audit_endpoint ON webhook_audit (endpoint_id, id);
