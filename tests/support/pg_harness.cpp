#include "tests/support/pg_harness.hpp"

#include <cstdlib>
#include <stdexcept>

#include <pqxx/pqxx>

#include "store/migrate.hpp"
#include "util/crypto.hpp"

namespace mailgate::test {

int run_command(const std::string& command, std::string* output) {
  FILE* p = popen(command.c_str(), "r");
  if (!p) throw std::runtime_error("cannot run " + command);
  char buf[4096];
  std::string out;
  std::size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int status = pclose(p);
  if (output) *output = out;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::filesystem::path temp_dir(const std::string& prefix) {
  auto base = std::filesystem::temp_directory_path() / (prefix + "-" + hex_encode(random_bytes(6)));
  std::filesystem::create_directories(base);
  return base;
}

namespace {
std::string tool(const std::string& args) { return std::string(MAILGATE_SOURCE_DIR) + "/tools/pg-cluster " + args; }
}  // namespace

PgCluster::PgCluster(std::filesystem::path dir, bool owned) : dir_(std::move(dir)), owned_(owned) { start(); }

PgCluster::~PgCluster() {
  if (owned_) run_command(tool("destroy " + dir_.string()) + " >/dev/null 2>&1");
}

void PgCluster::start() {
  std::string out;
  if (run_command(tool("start " + dir_.string()), &out) != 0) throw std::runtime_error("cannot start PostgreSQL in " + dir_.string());
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  base_ = out.substr(0, out.rfind('/') + 1);
}

void PgCluster::stop() {
  if (run_command(tool("stop " + dir_.string())) != 0) throw std::runtime_error("cannot stop PostgreSQL in " + dir_.string());
}

std::string PgCluster::url(const std::string& database) const { return base_ + database; }

PgCluster& PgCluster::shared() {
  static std::unique_ptr<PgCluster> cluster = [] {
    if (const char* dir = std::getenv("MAILGATE_PG_DIR")) return std::make_unique<PgCluster>(dir, false);
    return std::make_unique<PgCluster>(temp_dir("mailgate-pg") / "data", true);
  }();
  return *cluster;
}

std::string fresh_database() {
  auto& cluster = PgCluster::shared();
  const std::string name = "t_" + hex_encode(random_bytes(8));
  pqxx::connection admin(cluster.admin_url());
  pqxx::nontransaction(admin).exec("CREATE DATABASE " + name);
  return cluster.url(name);
}

std::string fresh_migrated_database() {
  auto url = fresh_database();
  pqxx::connection c(url);
  migrate(c);
  return url;
}

}  // namespace mailgate::test
