-- Mailgun (issue 7): the webhook tokens already used, and Mailgun domains configured once.
--
-- mailgun_webhook_tokens: every `token` of a Mailgun webhook that was accepted, written in the
-- same transaction as the message it brought (daemon/mailgun_inbound.cpp). A token seen again
-- with the same content for the same mailbox is Mailgun retrying a webhook whose 200 it did not
-- get: answered 200 again, nothing stored twice. Any other reuse is a replay: 406. The message
-- itself has source = 'mailgun' and source_key = the token. Rows whose signed timestamp lies
-- further back than [mailgun] webhook_max_age may be purged: such a webhook is refused on its
-- timestamp before its token is looked at.
CREATE TABLE mailgun_webhook_tokens (
  token          text PRIMARY KEY,
  mailbox_id     bigint NOT NULL REFERENCES mailboxes (id),
  content_sha256 text NOT NULL,              -- of the message as stored (messages.raw_sha256)
  message_id     bigint REFERENCES messages (id),
  signed_at      timestamptz NOT NULL,       -- the webhook's `timestamp`
  received_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mailgun_webhook_tokens_signed ON mailgun_webhook_tokens (signed_at);

-- A Mailgun sending/receiving domain, configured once and chosen per mailbox
-- (mailboxes.mailgun_domain_id). Secrets are sealed (AES-256-GCM, util/crypto.hpp SecretBox)
-- and never returned by the API. Never deleted, only deactivated.
--   api_key              the private API key, for POST /v3/{domain}/messages.mime (HTTP Basic api:<key>)
--   webhook_signing_key  Mailgun's "HTTP webhook signing key" (one per account/domain)
-- A mailbox with a mailgun_domain_id uses the domain's values; the mailbox's own columns
-- (mailgun_domain, mailgun_region, mailgun_api_key, mailgun_webhook_key) remain the fallback
-- for a mailbox without one (or a domain without that secret).
CREATE TABLE mailgun_domains (
  id                  bigserial PRIMARY KEY,
  domain              text NOT NULL UNIQUE CHECK (domain = lower(domain) AND domain <> ''),
  region              text NOT NULL DEFAULT 'eu' CHECK (region IN ('eu', 'us')),
  api_key             bytea,                 -- sealed
  webhook_signing_key bytea,                 -- sealed
  active              boolean NOT NULL DEFAULT true,
  created_at          timestamptz NOT NULL DEFAULT now(),
  updated_at          timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE mailboxes ADD COLUMN mailgun_domain_id bigint REFERENCES mailgun_domains (id);
CREATE INDEX mailboxes_mailgun_domain ON mailboxes (mailgun_domain_id) WHERE mailgun_domain_id IS NOT NULL;
