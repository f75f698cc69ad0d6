#include "store/users.hpp"

#include <pqxx/pqxx>

namespace mailgate {

std::int64_t user_create(pqxx::dbtransaction& tx, const NewUser& u, const Actor& actor) {
  auto existing = tx.exec_params("SELECT 1 FROM users WHERE email = $1", u.email);
  if (!existing.empty()) throw UserExists("a user with e-mail " + u.email + " already exists");
  auto r = tx.exec_params1(
      "INSERT INTO users (email, first_name, infix, last_name, password_hash, password_must_change) "
      "VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
      u.email, u.first_name, u.infix, u.last_name, u.password_hash, u.password_must_change);
  const auto id = r[0].as<std::int64_t>();
  std::string roles;
  for (const auto& role : u.roles) {
    tx.exec_params("INSERT INTO user_roles (user_id, role) VALUES ($1, $2)", id, role);
    roles += (roles.empty() ? "" : ",") + role;
  }
  audit_write(tx, actor, "user", std::to_string(id), "create",
              {{"email", std::nullopt, u.email},
               {"first_name", std::nullopt, u.first_name},
               {"infix", std::nullopt, u.infix},
               {"last_name", std::nullopt, u.last_name},
               {"roles", std::nullopt, roles},
               {"password", std::nullopt, u.password_hash ? std::optional<std::string>("set") : std::nullopt, true}});
  return id;
}

bool user_active_admin_exists(pqxx::dbtransaction& tx) {
  auto r = tx.exec("SELECT 1 FROM users u JOIN user_roles r ON r.user_id = u.id WHERE r.role = 'admin' AND u.active LIMIT 1");
  return !r.empty();
}

}  // namespace mailgate
