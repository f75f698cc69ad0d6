// daemon/graph_sync: Microsoft 365 inbound through Microsoft Graph. One supervised coroutine per
// active mailbox with incoming_type 'ms365', each on its own strand, beside the IMAP supervisor
// (daemon/mailbox_sync) and with the same health rules (rules/mailbox_sync, daemon/mailbox_health).
//
// A poll, every poll_interval_seconds: a delta query on the inbox
// ({[graph] api_base}/users/{ms365_user_id}/mailFolders('inbox')/messages/delta, "Prefer:
// odata.maxpagesize=[graph] page_size" and IdType="ImmutableId"), following every @odata.nextLink
// until the page with the @odata.deltaLink. For each page: the ids not stored yet get their raw
// MIME from /messages/{id}/$value (at most [graph] max_concurrent_per_mailbox requests at once),
// and the page's messages are ingested (store/ingest: source 'ms365', source key = the immutable
// Graph id) in the transaction that stores the next link as the cursor (graph_sync_state,
// migration 0013): the nextLink while the round goes on, the deltaLink when it is done. A daemon
// killed mid-round therefore continues with the next page after a restart, nothing lost, nothing
// twice. A link Graph no longer knows (410) starts a full round again; what it lists again is
// already stored and is not fetched. Links must point at the configured api_base (the bearer token
// goes nowhere else).
//
// Tokens: daemon/graph_tokens (client credentials, cached). A 401 from Graph drops the token and
// asks for a new one once. Throttling: 429/503 wait for Retry-After (every request of the mailbox
// waits: never retried before it), or 1 s doubling when absent; after 8 in a row the poll fails
// (retrying). Failures: an expired or revoked secret (the token endpoint's permanent errors) and
// Graph's 400/403/404 mark the mailbox "failed" with Microsoft's text as health_reason, until an
// admin saves the mailbox or asks for a reconnect; everything else is "retrying" with backoff
// (1 s .. 5 min, jitter) and "failed" after [imap] give_up_after. A secret whose
// ms365_secret_expires_on is within [graph] secret_expiry_warning_days is logged as a warning
// (once per daemon run) and audited (once per expiry date).
#pragma once
#include <memory>

#include "daemon/services.hpp"

namespace boost::asio {
class io_context;
}

namespace mailgate {

class GraphSupervisor {
 public:
  GraphSupervisor(boost::asio::io_context& io, Services& services);  // services.graph_tokens must be set
  ~GraphSupervisor();
  void start();  // begins watching the mailboxes table; returns at once
  void stop();   // asks every loop to end at its next step
  void wake();   // looks for mailboxes to start now instead of at the next watch interval

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace mailgate
