// store/messages: what happens to stored messages after ingest.
//
// - Late linking: when a contact gains an address, the messages that carry it (From, To, Cc,
//   Reply-To; recorded in message_addresses at ingest) are linked to the contact, under the same
//   policy as at ingest (rules/linking: each message's mailbox's own address and exclusions are
//   skipped). A link a user removed by hand is not made again by this unless the address is new
//   to the contact.
// - Retention: a removed message (folder "removed", a soft delete) is purged for good once it has
//   been removed longer than the retention; every purge is audited.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace pqxx {
class dbtransaction;
}

namespace mailgate {

// Links the messages carrying any of `match_keys` to `contact_id`; returns how many links were made.
int link_earlier_messages(pqxx::dbtransaction& tx, std::int64_t contact_id, const std::vector<std::string>& match_keys);

// Purges at most `limit` messages removed before now() - retention; returns how many.
int purge_removed_messages(pqxx::dbtransaction& tx, std::chrono::hours retention, int limit = 500);

}  // namespace mailgate
