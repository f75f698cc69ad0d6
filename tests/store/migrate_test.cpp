// store/: migrations against a real PostgreSQL (one fresh database per test).
#include <gtest/gtest.h>

#include <pqxx/pqxx>

#include "store/migrate.hpp"
#include "tests/support/pg_harness.hpp"

namespace mailgate {
namespace {

TEST(Migrations, EmbeddedFilesAreNumberedInOrder) {
  const auto& all = known_migrations();
  ASSERT_FALSE(all.empty());
  for (std::size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(all[i].version, static_cast<int>(i + 1)) << all[i].name;
    EXPECT_EQ(all[i].checksum.size(), 64u);
  }
}

TEST(Migrations, ApplyOnceThenNothing) {
  pqxx::connection c(test::fresh_database());
  EXPECT_EQ(migration_status(c).applied, 0);
  auto first = migrate(c);
  EXPECT_EQ(first.size(), known_migrations().size());
  auto status = migration_status(c);
  EXPECT_TRUE(status.current());
  EXPECT_EQ(status.applied, known_migrations().back().version);

  auto second = migrate(c);
  EXPECT_TRUE(second.empty());
  pqxx::work tx(c);
  EXPECT_EQ(tx.exec("SELECT count(*) FROM schema_migrations")[0][0].as<std::size_t>(), known_migrations().size());
  EXPECT_EQ(tx.exec("SELECT count(*) FROM roles")[0][0].as<int>(), 3) << "seed rows inserted once";
}

TEST(Migrations, ConcurrentMigratorsApplyEachOnce) {
  const auto url = test::fresh_database();
  std::vector<std::thread> threads;
  std::atomic<std::size_t> applied{0};
  for (int i = 0; i < 4; ++i)
    threads.emplace_back([&] {
      pqxx::connection c(url);
      applied += migrate(c).size();
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(applied.load(), known_migrations().size());
}

TEST(Migrations, ChangedAppliedMigrationIsRefused) {
  pqxx::connection c(test::fresh_migrated_database());
  {
    pqxx::work tx(c);
    tx.exec("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1");
    tx.commit();
  }
  try {
    migrate(c);
    FAIL() << "a changed migration must be refused";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("was changed after it was applied"), std::string::npos) << e.what();
  }
}

TEST(Migrations, FailedMigrationLeavesNothingBehind) {
  // A database where the first migration's table already exists: migration 1 fails as a whole,
  // and neither its other tables nor its schema_migrations row remain.
  pqxx::connection c(test::fresh_database());
  pqxx::nontransaction(c).exec("CREATE TABLE roles (x int)");
  EXPECT_THROW(migrate(c), pqxx::sql_error);
  pqxx::work tx(c);
  EXPECT_TRUE(tx.exec("SELECT to_regclass('users')")[0][0].is_null());
  EXPECT_EQ(tx.exec("SELECT count(*) FROM schema_migrations")[0][0].as<int>(), 0);
}

TEST(AuditLog, IsAppendOnly) {
  pqxx::connection c(test::fresh_migrated_database());
  {
    pqxx::work tx(c);
    tx.exec("INSERT INTO audit_log (actor_kind, entity, entity_id, action) VALUES ('cli', 'user', '1', 'create')");
    tx.commit();
  }
  for (const char* sql : {"UPDATE audit_log SET action = 'x'", "DELETE FROM audit_log", "TRUNCATE audit_log"}) {
    pqxx::work tx(c);
    EXPECT_THROW(tx.exec(sql), pqxx::insufficient_privilege) << sql;
  }
  pqxx::work tx(c);
  EXPECT_EQ(tx.exec("SELECT count(*) FROM audit_log WHERE action = 'create'")[0][0].as<int>(), 1);
}

}  // namespace
}  // namespace mailgate
