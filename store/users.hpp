// store/users: user rows. Validation (address syntax, password policy) happens before these are
// called; these enforce what only the database can (unique e-mail) and write the audit row in the
// caller's transaction.
#pragma once
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "store/audit.hpp"

namespace mailgate {

struct NewUser {
  std::string email;  // normalised, lower-case
  std::string first_name, infix, last_name;
  std::vector<std::string> roles;
  std::optional<std::string> password_hash;
  bool password_must_change = false;
};

class UserExists : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

std::int64_t user_create(pqxx::dbtransaction& tx, const NewUser& user, const Actor& actor);
bool user_active_admin_exists(pqxx::dbtransaction& tx);

}  // namespace mailgate
