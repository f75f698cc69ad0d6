// daemon/mailgun_inbound: the Mailgun inbound webhook (issue 7), the endpoint a Mailgun route
// forward()s to. One URL per mailbox, its unguessable token as a path segment (the mailbox API
// reports it as mailgun_inbound_path):
//     POST /webhooks/mailgun/{token}/mime       field body-mime holds the raw message
//     POST /webhooks/mailgun/{token}            the parsed-fields form (message-headers, body-plain,
//     POST /webhooks/mailgun/{token}/messages   body-html, attachment-N): the message is rebuilt
// Each URL takes either form (body-mime wins); the body limit is [mailgun] webhook_max_bytes.
//
// Through the one ingest pipeline: verify -> parse -> one transaction (the message through
// store/ingest, linked to contacts, and its webhook token) -> commit -> 200. Answers, chosen so
// that Mailgun's retries do the right thing (it retries anything but 200 and 406, for 8 hours):
//   200  stored, or the same webhook again (same token, same message: the retry of a webhook
//        whose 200 was lost; nothing is stored twice)
//   406  unknown token, inactive or non-Mailgun mailbox, missing or wrong signature, timestamp
//        outside [mailgun] webhook_max_age, a token already used for another message (replay)
//   400  a malformed form, more than webhook_max_fields fields, neither body-mime nor
//        message-headers;  413  a body over webhook_max_bytes
//   503  the database cannot be reached (Mailgun retries later)
// A message GMime cannot parse is stored raw with its warnings, never refused. The idempotency
// key is (mailbox, 'mailgun', token). The signing key is the mailbox's Mailgun domain's
// (mailgun_domains.webhook_signing_key) or else the mailbox's own mailgun_webhook_key.
// Nothing is audited per message (as for IMAP); each request logs one event=mailgun_webhook line
// without token, signature or key.
#pragma once

namespace mailgate {

class Router;
struct Services;

void register_mailgun_routes(Router& router, Services& services);

}  // namespace mailgate
