-- Attachments stored once (issue 4's import speed).
--
-- An attachment is usually a base64 part of the raw message, which `messages.raw` keeps
-- byte-exact anyway; storing its decoded bytes again in `attachments.data` made the database and
-- its WAL about 65 % larger than the mail (1,376 MiB for 824 MB in the IMAP benchmark) and cost
-- PostgreSQL most of its time in the import. Now the table is `attachment_parts`, and a part
-- whose bytes can be recovered exactly from the raw message (store/ingest.hpp, RawSpan) keeps only
-- where they lie (raw_offset, raw_length: bytes of `messages.raw`, from 0) and how they are encoded
-- (raw_encoding: base64, or identity for unencoded parts); `data` is NULL for it. Other parts
-- (quoted-printable, an attached message, anything a decoder could read differently) keep `data`.
--
-- `attachments` becomes a view with the same columns as the table had, `data` always the
-- decoded bytes: readers (the API's download, tests) are unchanged. It is a simple view: DELETE
-- and UPDATE of the other columns work through it; rows are inserted into attachment_parts.
ALTER TABLE attachments RENAME TO attachment_parts;
ALTER TABLE attachment_parts
  ALTER COLUMN data DROP NOT NULL,
  ADD COLUMN raw_offset   integer CHECK (raw_offset >= 0),
  ADD COLUMN raw_length   integer CHECK (raw_length >= 0),
  ADD COLUMN raw_encoding text CHECK (raw_encoding IN ('base64', 'identity')),
  ADD CONSTRAINT attachment_parts_bytes_somewhere CHECK (
    (data IS NULL) = (raw_encoding IS NOT NULL) AND (raw_encoding IS NULL) = (raw_offset IS NULL)
    AND (raw_offset IS NULL) = (raw_length IS NULL));

-- The bytes of a part kept as a span of its message's raw bytes. PostgreSQL's base64 decoder
-- skips line breaks and spaces, as RFC 2045 wants; store/ingest only records spans that are
-- plain base64 otherwise (protocol/mime.cpp checks).
CREATE FUNCTION attachment_bytes_from_raw(message bigint, raw_offset integer, raw_length integer, raw_encoding text)
RETURNS bytea LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT CASE raw_encoding
           WHEN 'base64' THEN decode(convert_from(substring(m.raw FROM raw_offset + 1 FOR raw_length), 'UTF8'), 'base64')
           ELSE substring(m.raw FROM raw_offset + 1 FOR raw_length)
         END
  FROM messages m WHERE m.id = message
$$;

CREATE VIEW attachments AS
  SELECT id, message_id, position, filename, content_type, content_id, inline_part, size, sha256,
         coalesce(data, attachment_bytes_from_raw(message_id, raw_offset, raw_length, raw_encoding)) AS data
  FROM attachment_parts;

-- After-import actions (\Seen, move, delete) are written with their batch, in its transaction,
-- and removed once the server has done them: a daemon that dies between the commit and the action
-- does it on its next connection to the mailbox (daemon/mailbox_sync.cpp) instead of never.
CREATE TABLE imap_pending_actions (
  id          bigserial PRIMARY KEY,
  mailbox_id  bigint NOT NULL REFERENCES mailboxes (id),
  folder      text NOT NULL,             -- the folder the UIDs are in, as imap_cursors.folder
  uidvalidity bigint NOT NULL,
  uids        bigint[] NOT NULL,
  action      text NOT NULL CHECK (action IN ('seen', 'move', 'delete')),
  move_folder text NOT NULL DEFAULT '',  -- move: the target folder as configured
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX imap_pending_actions_mailbox ON imap_pending_actions (mailbox_id, id);
