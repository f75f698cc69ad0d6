// store/audit: the append-only audit trail. audit_write() is called inside the transaction that
// makes the change, so the change and its record commit or vanish together. Secret fields are
// written as "***" (changed or not), never as their value.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace pqxx {
class dbtransaction;
}

namespace mailgate {

struct Actor {
  std::string kind = "daemon";  // user | api_key | daemon | cli
  std::optional<std::int64_t> id;
  std::string label;  // e-mail of the user, name of the key, "mailgated user add", ...
};

struct FieldChange {
  std::string field;
  std::optional<std::string> before;  // null: absent / not set
  std::optional<std::string> after;
  bool secret = false;
};

void audit_write(pqxx::dbtransaction& tx, const Actor& actor, std::string_view entity, std::string_view entity_id,
                 std::string_view action, const std::vector<FieldChange>& changes = {});

}  // namespace mailgate
