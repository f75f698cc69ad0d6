// daemon/mailbox_health: writing a mailbox's health (ok / retrying / failed, rules/mailbox_sync.hpp),
// shared by the inbound supervisors (IMAP: daemon/mailbox_sync, Microsoft 365: daemon/graph_sync).
// Only a real change is written; a change of state is audited (actor "daemon") and logged.
#pragma once
#include <cstdint>
#include <string>

#include "rules/mailbox_sync.hpp"

namespace pqxx {
class dbtransaction;
}

namespace mailgate {

void mailbox_set_health(pqxx::dbtransaction& tx, std::int64_t mailbox_id, Health health, const std::string& reason,
                        const std::string& component = "mailbox sync");

}  // namespace mailgate
