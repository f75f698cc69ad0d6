// config/: each kind of problem is refused with the key and its line; valid files load.
#include <gtest/gtest.h>

#include <fstream>

#include "config/config.hpp"
#include "tests/support/pg_harness.hpp"

namespace mailgate {
namespace {

constexpr const char* kMinimal = "[database]\nurl = \"postgresql://x@localhost/y\"\n";

std::vector<std::string> problems_of(const std::string& text) {
  try {
    parse_config(text, "test.toml");
  } catch (const ConfigError& e) {
    return e.problems();
  }
  return {};
}

TEST(Config, MinimalFileGetsDefaults) {
  Config c = parse_config(kMinimal, "test.toml");
  EXPECT_EQ(c.database.url, "postgresql://x@localhost/y");
  EXPECT_EQ(c.daemon.io_threads, 2);
  EXPECT_EQ(c.daemon.log_level, "info");
  EXPECT_EQ(c.http.address, "127.0.0.1");
  EXPECT_EQ(c.http.port, 8080);
  EXPECT_EQ(c.database.pool_size, 4);
  EXPECT_FALSE(c.security.allow_private_hosts);
}

TEST(Config, ExampleFileIsValidAndSetsEveryKeyItDocuments) {
  Config c = load_config(std::string(MAILGATE_SOURCE_DIR) + "/config/mailgate.example.toml");
  EXPECT_EQ(c.http.max_body_bytes, 1048576u);
  EXPECT_EQ(c.database.query_timeout.count(), 30);
  EXPECT_EQ(c.messages.retention.count(), 30 * 24);
  EXPECT_EQ(c.messages.purge_interval.count(), 3600);
}

TEST(Config, DevFileIsValid) {
  Config c = load_config(std::string(MAILGATE_SOURCE_DIR) + "/config/dev.toml");
  EXPECT_EQ(c.http.port, 8480);
  EXPECT_EQ(c.secrets.key_file, std::filesystem::path(MAILGATE_SOURCE_DIR) / "config/../var/secrets.key");
}

struct BadCase {
  const char* name;
  std::string text;
  std::string expected;  // one problem line, exactly
};

void PrintTo(const BadCase& c, std::ostream* os) { *os << c.name; }

class ConfigProblems : public ::testing::TestWithParam<BadCase> {};

TEST_P(ConfigProblems, NamesKeyAndLine) {
  auto problems = problems_of(GetParam().text);
  ASSERT_EQ(problems.size(), 1u) << ::testing::PrintToString(problems);
  EXPECT_EQ(problems[0], GetParam().expected);
}

INSTANTIATE_TEST_SUITE_P(
    Table, ConfigProblems,
    ::testing::Values(
        BadCase{"misspelt_key", std::string(kMinimal) + "[http]\nprot = 80\n",
                "test.toml:4: http.prot: unknown key (did you mean port?)"},
        BadCase{"unknown_table", std::string(kMinimal) + "[smtp_server]\nport = 25\n",
                "test.toml:3: smtp_server: unknown key"},
        BadCase{"unknown_far_key", std::string(kMinimal) + "colour = \"blue\"\n", "test.toml:3: database.colour: unknown key"},
        BadCase{"wrong_type_string", std::string(kMinimal) + "[daemon]\nlog_level = 3\n",
                "test.toml:4: daemon.log_level: must be a string"},
        BadCase{"wrong_type_integer", std::string(kMinimal) + "[http]\nport = \"8080\"\n",
                "test.toml:4: http.port: must be an integer"},
        BadCase{"float_is_not_integer", std::string(kMinimal) + "[http]\nport = 80.5\n",
                "test.toml:4: http.port: must be an integer"},
        BadCase{"wrong_type_bool", std::string(kMinimal) + "[security]\nallow_private_hosts = \"yes\"\n",
                "test.toml:4: security.allow_private_hosts: must be true or false"},
        BadCase{"table_expected", std::string("http = 5\n") + kMinimal, "test.toml:1: http: must be a table"},
        BadCase{"missing_required", "[http]\nport = 80\n", "test.toml: database.url: required key is missing"},
        BadCase{"out_of_range", std::string(kMinimal) + "[http]\nport = 70000\n",
                "test.toml:4: http.port: must be between 0 and 65535, not 70000"},
        BadCase{"zero_pool", "[database]\nurl = \"x\"\npool_size = 0\n",
                "test.toml:3: database.pool_size: must be between 1 and 256, not 0"},
        BadCase{"impossible_level", std::string(kMinimal) + "[daemon]\nlog_level = \"loud\"\n",
                "test.toml:4: daemon.log_level: must be one of trace, debug, info, warn, error, critical, off"},
        BadCase{"empty_address", std::string(kMinimal) + "[http]\naddress = \"\"\n",
                "test.toml:4: http.address: must not be empty"},
        BadCase{"https_key_without_certificate", std::string(kMinimal) + "[http]\ntls_key = \"web.key\"\n",
                "test.toml:4: http.tls_key: tls_certificate and tls_key go together"},
        BadCase{"https_certificate_without_key", std::string(kMinimal) + "[http]\ntls_certificate = \"web.pem\"\n",
                "test.toml: http.tls_key: tls_certificate and tls_key go together"},
        BadCase{"negative_retention", std::string(kMinimal) + "[messages]\nretention_days = -1\n",
                "test.toml:4: messages.retention_days: must be between 0 and 3650, not -1"},
        BadCase{"syntax_error", "[database\nurl = 1\n", "test.toml:1: syntax: Error while parsing table header: expected ']', saw '\\n'"}),
    [](const auto& info) { return info.param.name; });

TEST(Config, ReportsEveryProblemAtOnce) {
  auto problems = problems_of("[daemon]\nio_thread = 2\n[http]\nport = -1\n");
  ASSERT_EQ(problems.size(), 3u) << ::testing::PrintToString(problems);
}

TEST(Config, UnreadableFile) {
  try {
    load_config("/nonexistent/mailgate.toml");
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.problems().at(0), "/nonexistent/mailgate.toml: cannot read the file");
  }
}

TEST(Config, CheckConfigCommandExits78NamingKeyAndLine) {
  auto dir = test::temp_dir("config");
  std::ofstream(dir / "bad.toml") << kMinimal << "[http]\nport = 8080\nadress = \"0.0.0.0\"\n";
  std::string out;
  int status = test::run_command(std::string(MAILGATE_BINARY) + " check-config " + (dir / "bad.toml").string() + " 2>&1", &out);
  EXPECT_EQ(status, 78) << out;
  EXPECT_NE(out.find("bad.toml:5: http.adress: unknown key (did you mean address?)"), std::string::npos) << out;

  std::ofstream(dir / "good.toml") << kMinimal;
  status = test::run_command(std::string(MAILGATE_BINARY) + " check-config " + (dir / "good.toml").string() + " 2>&1", &out);
  EXPECT_EQ(status, 0) << out;
  std::filesystem::remove_all(dir);
}

TEST(Config, ServeRefusesABadFileWith78) {
  auto dir = test::temp_dir("config");
  std::ofstream(dir / "bad.toml") << "[database]\nurl = \"x\"\npool_size = \"four\"\n";
  std::string out;
  int status = test::run_command(std::string(MAILGATE_BINARY) + " serve --config " + (dir / "bad.toml").string() + " 2>&1", &out);
  EXPECT_EQ(status, 78) << out;
  EXPECT_NE(out.find("bad.toml:3: database.pool_size: must be an integer"), std::string::npos) << out;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace mailgate
