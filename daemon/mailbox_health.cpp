#include "daemon/mailbox_health.hpp"

#include <pqxx/pqxx>
#include <spdlog/spdlog.h>

#include "store/audit.hpp"

namespace mailgate {

void mailbox_set_health(pqxx::dbtransaction& tx, std::int64_t id, Health health, const std::string& reason, const std::string& component) {
  auto before = tx.exec_params("SELECT health, coalesce(health_reason, '') FROM mailboxes WHERE id = $1", id);
  if (before.empty()) return;
  const std::string old_health = before[0][0].as<std::string>(), old_reason = before[0][1].as<std::string>();
  const std::string next = to_string(health);
  if (old_health == next && old_reason == reason) return;
  tx.exec_params(
      "UPDATE mailboxes SET health = $2, health_reason = nullif($3, ''), "
      "failing_since = CASE WHEN $2 = 'ok' THEN NULL ELSE coalesce(failing_since, now()) END WHERE id = $1",
      id, next, reason);
  if (old_health != next) {
    audit_write(tx, Actor{"daemon", std::nullopt, component}, "mailbox", std::to_string(id), "health",
                {{"health", old_health, next}, {"health_reason", old_reason, reason}});
    spdlog::info("event=mailbox_health mailbox={} from={} to={} reason=\"{}\"", id, old_health, next, reason);
  }
}

}  // namespace mailgate
