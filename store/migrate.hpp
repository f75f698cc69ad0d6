// Versioned SQL migrations: plain files store/migrations/NNNN_name.sql, embedded in the binary,
// applied in order. Each runs in its own transaction together with its row in schema_migrations,
// so a migration is either wholly applied and recorded or not at all. Applying twice changes
// nothing. A recorded migration whose text changed since is refused (checksum), because the
// database would no longer match what the file says. Concurrent daemons serialise on an advisory
// lock, so two processes starting together apply each migration once.
#pragma once
#include <string>
#include <vector>

#include "store/store.hpp"

namespace mailgate {

struct Migration {
  int version;
  std::string name;  // file name without the version prefix and .sql
  std::string sql;
  std::string checksum;  // SHA-256 hex of sql
};

struct MigrationStatus {
  int applied = 0;  // highest version recorded in the database (0: none)
  int known = 0;    // highest version this binary carries
  bool current() const { return applied == known; }
};

const std::vector<Migration>& known_migrations();

// Applies every pending migration. Returns the versions it applied (empty when current).
std::vector<int> migrate(pqxx::connection_base& conn);

MigrationStatus migration_status(pqxx::connection_base& conn);

}  // namespace mailgate
