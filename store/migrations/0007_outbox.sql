-- The outbox at work (issue 5): what a row needs to be composed, sent, retried and recorded.
--
-- A row is composed once (raw); every retry sends those same bytes with the same Message-ID, so
-- a receiver can recognise the one possible duplicate (the server accepted, our commit was lost).
-- A daemon that claims rows marks them 'sending' with a lease; a row whose lease passed (its
-- daemon died) is taken back and retried.

ALTER TABLE outbox
  ADD COLUMN from_name         text NOT NULL DEFAULT '',
  ADD COLUMN reply_to          text,
  ADD COLUMN raw               bytea,                  -- the composed message, once composed
  ADD COLUMN lease_until       timestamptz,            -- state 'sending': claimed until then
  ADD COLUMN failed_step       text,                   -- connect, tls, greeting, ehlo, auth, mail, rcpt, data
  ADD COLUMN refused           jsonb NOT NULL DEFAULT '[]'::jsonb,  -- recipients refused while others were accepted
  ADD COLUMN contact_id        bigint REFERENCES contacts (id),
  ADD COLUMN administration_id bigint REFERENCES administrations (id),
  ADD COLUMN template_id       bigint REFERENCES templates (id),
  ADD COLUMN created_by        bigint REFERENCES users (id),
  ADD COLUMN sent_message_id   bigint REFERENCES messages (id),  -- the copy in the mailbox's "sent" folder
  ADD COLUMN age_from          timestamptz NOT NULL DEFAULT now();  -- max_age counts from here (a manual retry restarts it)

ALTER TABLE outbox ADD CONSTRAINT outbox_mailbox_fk FOREIGN KEY (mailbox_id) REFERENCES mailboxes (id);
CREATE INDEX outbox_sending ON outbox (lease_until) WHERE state = 'sending';
CREATE INDEX outbox_list ON outbox (id DESC);

CREATE TABLE outbox_attachments (
  outbox_id    bigint NOT NULL REFERENCES outbox (id),
  position     integer NOT NULL,
  filename     text NOT NULL,
  content_type text NOT NULL,
  data         bytea NOT NULL,
  PRIMARY KEY (outbox_id, position)
);
