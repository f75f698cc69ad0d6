-- Microsoft 365 inbound through Microsoft Graph (issue 7): where each mailbox's delta sync stands.
--
-- graph_sync_state: one row per ms365 mailbox (daemon/graph_sync.cpp). `link` is the delta query
-- URL to call next: the @odata.deltaLink of the last finished round (round_complete), or the
-- @odata.nextLink of a round still in progress. Each page's messages are ingested in the same
-- transaction that moves `link` past that page, so a daemon that dies mid-round carries on with
-- the next page, losing nothing; a link Graph no longer knows (410) starts a new full round, and
-- the messages it lists again are duplicates by their source key (the immutable Graph id) and are
-- not fetched twice. `user_id` is the ms365_user_id the link belongs to: a mailbox pointed at
-- another user starts over. `expiry_warned_for`: the ms365_secret_expires_on date the "secret
-- expires soon" warning was audited for (once per date).
CREATE TABLE graph_sync_state (
  mailbox_id        bigint PRIMARY KEY REFERENCES mailboxes (id),
  user_id           text,
  link              text,
  round_complete    boolean NOT NULL DEFAULT false,
  rounds            bigint NOT NULL DEFAULT 0,     -- finished rounds (a deltaLink stored)
  expiry_warned_for date,
  updated_at        timestamptz NOT NULL DEFAULT now()
);

-- Office 365 over IMAP/SMTP for tenants that prefer it: 'xoauth2' authenticates with SASL XOAUTH2
-- and an access token for https://outlook.office365.com/.default from the mailbox's ms365_*
-- credentials (daemon/graph_tokens), instead of imap_password / smtp_password.
ALTER TABLE mailboxes
  ADD COLUMN imap_auth text NOT NULL DEFAULT 'password' CHECK (imap_auth IN ('password', 'xoauth2')),
  ADD COLUMN smtp_auth text NOT NULL DEFAULT 'password' CHECK (smtp_auth IN ('password', 'xoauth2'));
