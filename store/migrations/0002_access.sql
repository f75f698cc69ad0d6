-- Sessions, API keys, login throttling, password tokens, TOTP, organisation settings, and the
-- outbox table that every mail mailgate sends goes through (sending arrives with issue 5).

ALTER TABLE users
  ADD COLUMN totp_secret      bytea,           -- sealed with the secrets key (AES-256-GCM)
  ADD COLUMN totp_enabled     boolean NOT NULL DEFAULT false,
  ADD COLUMN totp_last_step   bigint,          -- a TOTP code is accepted once per time step
  ADD COLUMN default_mailbox_id bigint;        -- FK added with the mailboxes table

CREATE TABLE sessions (
  id             bigserial PRIMARY KEY,
  user_id        bigint NOT NULL REFERENCES users (id),
  token_hash     text NOT NULL UNIQUE,         -- SHA-256 (hex) of the bearer token; the token is never stored
  created_at     timestamptz NOT NULL DEFAULT now(),
  expires_at     timestamptz NOT NULL,
  revoked_at     timestamptz,
  remote_address text NOT NULL DEFAULT ''
);
CREATE INDEX sessions_user ON sessions (user_id) WHERE revoked_at IS NULL;

CREATE TABLE api_keys (
  id           bigserial PRIMARY KEY,
  name         text NOT NULL,
  key_hash     text NOT NULL UNIQUE,
  scopes       text[] NOT NULL CHECK (scopes <@ ARRAY['read', 'crm.write', 'mail.send', 'webform']::text[]),
  created_by   bigint NOT NULL REFERENCES users (id),
  created_at   timestamptz NOT NULL DEFAULT now(),
  expires_at   timestamptz,
  revoked_at   timestamptz,
  last_used_at timestamptz
);

-- Failed logins, for throttling per account and per client address.
CREATE TABLE login_failures (
  id             bigserial PRIMARY KEY,
  email          text NOT NULL,
  remote_address text NOT NULL,
  at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_email ON login_failures (email, at);
CREATE INDEX login_failures_address ON login_failures (remote_address, at);

CREATE TABLE password_tokens (
  id         bigserial PRIMARY KEY,
  user_id    bigint NOT NULL REFERENCES users (id),
  token_hash text NOT NULL UNIQUE,
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL,
  used_at    timestamptz
);

CREATE TABLE settings (
  key        text PRIMARY KEY,
  value      jsonb NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO settings (key, value) VALUES ('totp_required', 'false'), ('organisation_name', '"mailgate"');

-- The outbox: one row per message to send, written in the same transaction as its cause.
CREATE TABLE outbox (
  id              bigserial PRIMARY KEY,
  kind            text NOT NULL,                -- password_set, template, reply, group_mailing, ...
  state           text NOT NULL DEFAULT 'queued'
                  CHECK (state IN ('queued', 'sending', 'sent', 'retrying', 'failed', 'cancelled')),
  mailbox_id      bigint,                       -- null: the primary mailbox at send time
  from_address    text,
  to_addresses    text[] NOT NULL,
  cc_addresses    text[] NOT NULL DEFAULT '{}',
  bcc_addresses   text[] NOT NULL DEFAULT '{}',
  subject         text NOT NULL,
  text_body       text NOT NULL DEFAULT '',
  html_body       text,
  message_id      text NOT NULL UNIQUE,         -- stable, so receivers can deduplicate a resend
  cause_entity    text,
  cause_id        text,
  attempts        integer NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  last_error      text,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  sent_at         timestamptz
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE state IN ('queued', 'retrying');
