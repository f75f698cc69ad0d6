-- Messages from every source, their attachments, contact links and the IMAP sync cursors.
-- One row per message per mailbox; the raw bytes are kept byte-exact. The unique key
-- (mailbox, source, source_key) is the idempotency key of the one ingest pipeline: a source that
-- delivers again (a crash before its acknowledgement) finds the row and nothing is doubled.

CREATE TABLE messages (
  id                  bigserial PRIMARY KEY,
  mailbox_id          bigint REFERENCES mailboxes (id),         -- null for trusted-receiver mail
  source              text NOT NULL CHECK (source IN ('imap', 'ms365', 'mailgun', 'smtp', 'sent')),
  source_key          text NOT NULL,                             -- "uidvalidity:uid", Graph id, token, ...
  folder              text NOT NULL DEFAULT 'inbox' CHECK (folder IN ('inbox', 'concept', 'sent', 'removed')),
  status              text NOT NULL DEFAULT 'unread' CHECK (status IN ('unread', 'read', 'in_progress', 'urgent', 'closed')),
  responsible_user_id bigint REFERENCES users (id),
  responsible_team    text,
  raw                 bytea NOT NULL,
  raw_sha256          text NOT NULL,
  raw_size            integer NOT NULL,
  header_message_id   text NOT NULL DEFAULT '',
  sent_at             timestamptz,                               -- the Date header
  received_at         timestamptz NOT NULL DEFAULT now(),
  subject             text NOT NULL DEFAULT '',
  from_name           text NOT NULL DEFAULT '',
  from_address        text NOT NULL DEFAULT '',
  addresses           jsonb NOT NULL DEFAULT '{}',               -- {"from": [{"name","address"}], "to": [...], ...}
  text_body           text NOT NULL DEFAULT '',
  html_body           text NOT NULL DEFAULT '',
  parse_warnings      text[] NOT NULL DEFAULT '{}',
  transport_tls       boolean,
  peer_address        text,
  removed_at          timestamptz
);
CREATE UNIQUE INDEX messages_source_key ON messages (coalesce(mailbox_id, 0), source, source_key);
CREATE INDEX messages_content ON messages (mailbox_id, raw_sha256);
CREATE INDEX messages_mailbox_list ON messages (mailbox_id, id DESC);

-- Every address of From, To, Cc and Reply-To by match key: links messages to contacts that gain
-- an address later.
CREATE TABLE message_addresses (
  message_id bigint NOT NULL REFERENCES messages (id),
  match_key  text NOT NULL,
  PRIMARY KEY (message_id, match_key)
);
CREATE INDEX message_addresses_key ON message_addresses (match_key);

CREATE TABLE attachments (
  id           bigserial PRIMARY KEY,
  message_id   bigint NOT NULL REFERENCES messages (id),
  position     integer NOT NULL,
  filename     text NOT NULL DEFAULT '',
  content_type text NOT NULL,
  content_id   text NOT NULL DEFAULT '',
  inline_part  boolean NOT NULL DEFAULT false,
  size         integer NOT NULL,
  sha256       text NOT NULL,
  data         bytea NOT NULL,
  UNIQUE (message_id, position)
);

CREATE TABLE imap_cursors (
  mailbox_id  bigint PRIMARY KEY REFERENCES mailboxes (id),
  folder      text NOT NULL,
  uidvalidity bigint NOT NULL,
  last_uid    bigint NOT NULL,
  updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Which contacts a message belongs to: linked automatically at ingest, or by hand.
CREATE TABLE message_contacts (
  message_id bigint NOT NULL REFERENCES messages (id),
  contact_id bigint NOT NULL REFERENCES contacts (id),
  linked_by  text NOT NULL CHECK (linked_by IN ('auto', 'user')),
  linked_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (message_id, contact_id)
);
CREATE INDEX message_contacts_contact ON message_contacts (contact_id, message_id);
