-- Mailboxes: configuration of every connected mailbox (the connections come later). Secrets are
-- sealed with the secrets key (AES-256-GCM, util/crypto.hpp SecretBox) before they reach these
-- columns; the API never returns them. Mailboxes are never deleted, only deactivated.

CREATE TABLE mailboxes (
  id                     bigserial PRIMARY KEY,
  display_name           text NOT NULL,
  address                text NOT NULL,                 -- normalised (domain lower-case, punycode)
  active                 boolean NOT NULL DEFAULT true,
  is_primary             boolean NOT NULL DEFAULT false,
  incoming_type          text NOT NULL DEFAULT 'imap' CHECK (incoming_type IN ('imap', 'ms365', 'mailgun', 'none')),
  outgoing_type          text NOT NULL DEFAULT 'smtp' CHECK (outgoing_type IN ('smtp', 'ms365', 'mailgun')),
  -- IMAP
  imap_host              text,
  imap_port              integer CHECK (imap_port BETWEEN 1 AND 65535),
  imap_security          text CHECK (imap_security IN ('tls', 'starttls', 'plain')),
  imap_username          text,
  imap_password          bytea,                          -- sealed
  imap_folder            text,                           -- null: INBOX, found through NAMESPACE/LIST
  imap_after_import      text NOT NULL DEFAULT 'leave' CHECK (imap_after_import IN ('leave', 'seen', 'move', 'delete')),
  imap_move_folder       text,
  -- SMTP
  smtp_host              text,
  smtp_port              integer CHECK (smtp_port BETWEEN 1 AND 65535),
  smtp_security          text CHECK (smtp_security IN ('tls', 'starttls', 'plain')),
  smtp_username          text,
  smtp_password          bytea,                          -- sealed
  -- Microsoft 365 (Graph)
  ms365_tenant_id        text,
  ms365_client_id        text,
  ms365_client_secret    bytea,                          -- sealed
  ms365_user_id          text,                           -- user id or principal name of the mailbox
  ms365_secret_expires_on date,
  -- Mailgun
  mailgun_domain         text,
  mailgun_region         text CHECK (mailgun_region IN ('eu', 'us')),
  mailgun_api_key        bytea,                          -- sealed
  mailgun_webhook_key    bytea,                          -- sealed: the HTTP webhook signing key
  mailgun_inbound_token  text UNIQUE,                    -- unguessable path segment of the webhook URL
  -- behaviour
  poll_interval_seconds  integer NOT NULL DEFAULT 60 CHECK (poll_interval_seconds BETWEEN 10 AND 86400),
  send_max_connections   integer NOT NULL DEFAULT 2 CHECK (send_max_connections BETWEEN 1 AND 50),
  send_max_per_connection integer NOT NULL DEFAULT 20 CHECK (send_max_per_connection BETWEEN 1 AND 10000),
  send_max_per_minute    integer NOT NULL DEFAULT 60 CHECK (send_max_per_minute BETWEEN 1 AND 100000),
  bcc_self               boolean NOT NULL DEFAULT false,
  -- health, written by the daemon (issue 4)
  health                 text NOT NULL DEFAULT 'ok' CHECK (health IN ('ok', 'retrying', 'failed')),
  health_reason          text,
  last_sync_at           timestamptz,
  failing_since          timestamptz,
  created_at             timestamptz NOT NULL DEFAULT now(),
  updated_at             timestamptz NOT NULL DEFAULT now()
);
-- Exactly one primary mailbox (among all; the API refuses to leave none once one exists).
CREATE UNIQUE INDEX mailboxes_one_primary ON mailboxes (is_primary) WHERE is_primary;
CREATE INDEX mailboxes_address ON mailboxes (lower(address));

-- Users who may send from (and read) a mailbox. Admins may use every mailbox.
CREATE TABLE mailbox_users (
  mailbox_id bigint NOT NULL REFERENCES mailboxes (id),
  user_id    bigint NOT NULL REFERENCES users (id),
  PRIMARY KEY (mailbox_id, user_id)
);
CREATE INDEX mailbox_users_user ON mailbox_users (user_id);

-- Addresses and domains whose messages are not linked to contacts for this mailbox.
CREATE TABLE mailbox_exclusions (
  mailbox_id bigint NOT NULL REFERENCES mailboxes (id),
  kind       text NOT NULL CHECK (kind IN ('domain', 'address')),
  value      text NOT NULL CHECK (value = lower(value)),
  PRIMARY KEY (mailbox_id, kind, value)
);

ALTER TABLE users ADD CONSTRAINT users_default_mailbox_fk FOREIGN KEY (default_mailbox_id) REFERENCES mailboxes (id);
