#include "store/audit.hpp"

#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <pqxx/pqxx>

namespace mailgate {

void audit_write(pqxx::dbtransaction& tx, const Actor& actor, std::string_view entity, std::string_view entity_id,
                 std::string_view action, const std::vector<FieldChange>& changes) {
  boost::json::object json;
  for (const auto& c : changes) {
    auto value = [&](const std::optional<std::string>& v) -> boost::json::value {
      if (!v) return nullptr;
      if (c.secret) return "***";
      return boost::json::string(*v);
    };
    json[c.field] = boost::json::object{{"old", value(c.before)}, {"new", value(c.after)}};
  }
  tx.exec_params(
      "INSERT INTO audit_log (actor_kind, actor_id, actor_label, entity, entity_id, action, changes) "
      "VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)",
      actor.kind, actor.id, actor.label, std::string(entity), std::string(entity_id), std::string(action),
      boost::json::serialize(json));
}

}  // namespace mailgate
