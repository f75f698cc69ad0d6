// Test harness for PostgreSQL: private clusters started with tools/pg-cluster.
//
// - PgCluster::shared(): the cluster of this ctest run (MAILGATE_PG_DIR, started by the
//   pg_cluster fixture), or, when a test binary runs on its own, one started on first use and
//   destroyed at exit.
// - fresh_database(): a new, empty database in that cluster for one test, so tests never see
//   each other's rows and may run in parallel.
// - A test that stops PostgreSQL starts a cluster of its own (PgCluster owned by the test).
#pragma once
#include <filesystem>
#include <memory>
#include <string>

namespace mailgate::test {

class PgCluster {
 public:
  explicit PgCluster(std::filesystem::path dir, bool owned = true);  // starts it
  ~PgCluster();  // destroys an owned cluster
  PgCluster(const PgCluster&) = delete;

  static PgCluster& shared();

  void start();
  void stop();
  std::string url(const std::string& database = "mailgate") const;  // postgresql://...
  std::string admin_url() const { return url("postgres"); }

 private:
  std::filesystem::path dir_;
  bool owned_;
  std::string base_;  // url without the database name
};

// Creates database "t_<random>" in the shared cluster and returns its URL.
std::string fresh_database();
// Same, with every migration applied.
std::string fresh_migrated_database();

// A new temporary directory, removed by the caller (or left for inspection on failure).
std::filesystem::path temp_dir(const std::string& prefix);

// Runs a shell command, returns its exit status and (optionally) its standard output.
int run_command(const std::string& command, std::string* output = nullptr);

}  // namespace mailgate::test
