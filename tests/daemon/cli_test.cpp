// The mailgated command line: user add, migrate, usage errors.
#include <gtest/gtest.h>

#include <pqxx/pqxx>

#include "store/migrate.hpp"
#include "tests/support/daemon_process.hpp"
#include "tests/support/pg_harness.hpp"
#include "util/crypto.hpp"

namespace mailgate {
namespace {

struct Cli {
  explicit Cli(std::string url) : url(std::move(url)), process(this->url) {}
  int run(const std::string& args, std::string* out, const std::string& stdin_text = {}) {
    std::string cmd = std::string(MAILGATE_BINARY) + " " + args + " --config " + process.config_path().string() + " 2>&1";
    if (!stdin_text.empty()) cmd = "printf '%s\\n' '" + stdin_text + "' | " + cmd;
    return test::run_command(cmd, out);
  }
  std::string url;
  test::DaemonProcess process;  // only for its generated configuration; never started
};

TEST(Cli, MigrateAppliesOnce) {
  Cli cli(test::fresh_database());
  std::string out;
  EXPECT_EQ(cli.run("migrate", &out), 0) << out;
  EXPECT_NE(out.find("applied " + std::to_string(known_migrations().size()) + " migration(s)"), std::string::npos) << out;
  EXPECT_EQ(cli.run("migrate", &out), 0) << out;
  EXPECT_NE(out.find("applied 0 migration(s)"), std::string::npos) << out;
}

TEST(Cli, UserAddGeneratesAOneTimePasswordAndAudits) {
  Cli cli(test::fresh_database());
  std::string out;
  ASSERT_EQ(cli.run("user add --email ' Admin@Example.NL ' --first-name Anna", &out), 0) << out;
  EXPECT_NE(out.find("created user 1: admin@example.nl"), std::string::npos) << out;
  const std::string label = "one-time password (change it at first login): ";
  const auto at = out.find(label);
  ASSERT_NE(at, std::string::npos) << out;
  std::string password = out.substr(at + label.size());
  password.erase(password.find('\n'));

  pqxx::connection c(cli.url);
  pqxx::work tx(c);
  auto row = tx.exec1("SELECT password_hash, password_must_change, first_name FROM users WHERE email = 'admin@example.nl'");
  EXPECT_TRUE(password_verify(password, row[0].as<std::string>()));
  EXPECT_TRUE(row[1].as<bool>());
  EXPECT_EQ(row[2].as<std::string>(), "Anna");
  EXPECT_EQ(tx.exec1("SELECT role FROM user_roles WHERE user_id = 1")[0].as<std::string>(), "admin");
  auto audit = tx.exec1("SELECT actor_kind, entity, action, changes->'password'->>'new' FROM audit_log");
  EXPECT_EQ(audit[0].as<std::string>(), "cli");
  EXPECT_EQ(audit[1].as<std::string>(), "user");
  EXPECT_EQ(audit[2].as<std::string>(), "create");
  EXPECT_EQ(audit[3].as<std::string>(), "***") << "secrets are masked in the audit trail";
  EXPECT_EQ(tx.exec("SELECT 1 FROM audit_log WHERE changes::text LIKE '%argon2%'").size(), 0u);
}

TEST(Cli, UserAddIfNoAdminDoesNothingTheSecondTime) {
  Cli cli(test::fresh_database());
  std::string out;
  ASSERT_EQ(cli.run("user add --email first@example.nl --if-no-admin", &out), 0) << out;
  ASSERT_EQ(cli.run("user add --email second@example.nl --if-no-admin", &out), 0) << out;
  EXPECT_EQ(out, "");
  pqxx::connection c(cli.url);
  EXPECT_EQ(pqxx::work(c).exec1("SELECT count(*) FROM users")[0].as<int>(), 1);
}

TEST(Cli, UserAddRefusesBadInput) {
  Cli cli(test::fresh_database());
  std::string out;
  EXPECT_EQ(cli.run("user add --email not-an-address", &out), 2);
  EXPECT_NE(out.find("--email: the address has no @"), std::string::npos) << out;
  EXPECT_EQ(cli.run("user add --email a@example.nl --role wizard", &out), 2);
  EXPECT_NE(out.find("no role named 'wizard'"), std::string::npos) << out;
  EXPECT_EQ(cli.run("user add --email a@example.nl --password-stdin", &out, "short"), 2);
  EXPECT_NE(out.find("at least 8 characters"), std::string::npos) << out;
  ASSERT_EQ(cli.run("user add --email a@example.nl --password-stdin", &out, "Quite \"long\" p\\ssw0rd é"), 0) << out;
  EXPECT_EQ(out.find("one-time password"), std::string::npos) << "a given password is not printed";
  EXPECT_EQ(cli.run("user add --email A@example.nl", &out), 1);
  EXPECT_NE(out.find("already exists"), std::string::npos) << out;
  pqxx::connection c(cli.url);
  EXPECT_EQ(pqxx::work(c).exec1("SELECT count(*) FROM users")[0].as<int>(), 1);
}

TEST(Cli, UnknownCommandIsAUsageError) {
  std::string out;
  EXPECT_EQ(test::run_command(std::string(MAILGATE_BINARY) + " frobnicate 2>&1", &out), 2);
  EXPECT_NE(out.find("unknown command 'frobnicate'"), std::string::npos) << out;
  EXPECT_EQ(test::run_command(std::string(MAILGATE_BINARY) + " version", &out), 0);
  EXPECT_EQ(out.rfind("mailgated ", 0), 0u) << out;
}

}  // namespace
}  // namespace mailgate
