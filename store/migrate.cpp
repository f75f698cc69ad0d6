#include "store/migrate.hpp"

#include <charconv>
#include <stdexcept>

#include <pqxx/pqxx>
#include <spdlog/spdlog.h>

#include "util/crypto.hpp"
#include "util/embedded.hpp"

namespace mailgate {

namespace {

// Any constant works; it only has to be the same in every mailgated.
constexpr long long kMigrationLock = 0x6d61696c67617465;  // "mailgate"

constexpr const char* kCreateTable = R"sql(
CREATE TABLE IF NOT EXISTS schema_migrations (
  version    integer PRIMARY KEY,
  name       text NOT NULL,
  checksum   text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now()
))sql";

std::vector<Migration> load_embedded() {
  std::vector<Migration> out;
  for (const auto& f : embedded_migrations()) {
    const std::string file(f.name);
    const auto underscore = file.find('_');
    int version = 0;
    auto [p, ec] = std::from_chars(file.data(), file.data() + underscore, version);
    if (underscore == std::string::npos || ec != std::errc() || p != file.data() + underscore || version <= 0 ||
        file.size() < 5 || file.substr(file.size() - 4) != ".sql")
      throw std::logic_error("migration file name must be NNNN_name.sql: " + file);
    if (!out.empty() && out.back().version >= version)
      throw std::logic_error("duplicate migration version: " + file);
    out.push_back({version, file.substr(underscore + 1, file.size() - underscore - 5), std::string(f.bytes),
                   sha256_hex(f.bytes)});
  }
  return out;
}

}  // namespace

const std::vector<Migration>& known_migrations() {
  static const std::vector<Migration> migrations = load_embedded();
  return migrations;
}

std::vector<int> migrate(pqxx::connection_base& conn) {
  std::vector<int> applied;
  pqxx::nontransaction(conn).exec("SELECT pg_advisory_lock(" + std::to_string(kMigrationLock) + ")");
  try {
    pqxx::nontransaction(conn).exec(kCreateTable);
    for (const auto& m : known_migrations()) {
      pqxx::work tx(conn);
      auto r = tx.exec_params("SELECT checksum FROM schema_migrations WHERE version = $1", m.version);
      if (!r.empty()) {
        if (r[0][0].as<std::string>() != m.checksum)
          throw std::runtime_error("migration " + std::to_string(m.version) + "_" + m.name +
                                   " was changed after it was applied; restore the file or add a new migration");
        continue;
      }
      tx.exec(m.sql);
      tx.exec_params("INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)", m.version,
                     m.name, m.checksum);
      tx.commit();
      spdlog::info("event=migration_applied version={} name={}", m.version, m.name);
      applied.push_back(m.version);
    }
  } catch (...) {
    try {
      pqxx::nontransaction(conn).exec("SELECT pg_advisory_unlock(" + std::to_string(kMigrationLock) + ")");
    } catch (...) {
    }
    throw;
  }
  pqxx::nontransaction(conn).exec("SELECT pg_advisory_unlock(" + std::to_string(kMigrationLock) + ")");
  return applied;
}

MigrationStatus migration_status(pqxx::connection_base& conn) {
  MigrationStatus s;
  s.known = known_migrations().empty() ? 0 : known_migrations().back().version;
  pqxx::read_transaction tx(conn);
  auto exists = tx.exec("SELECT to_regclass('schema_migrations') IS NOT NULL");
  if (exists[0][0].as<bool>()) {
    auto r = tx.exec("SELECT coalesce(max(version), 0) FROM schema_migrations");
    s.applied = r[0][0].as<int>();
  }
  return s;
}

}  // namespace mailgate
