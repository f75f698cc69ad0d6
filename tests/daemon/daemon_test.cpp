// daemon/: the real mailgated binary against a real PostgreSQL, over loopback HTTP.
#include <gtest/gtest.h>

#include <signal.h>

#include <future>
#include <thread>

#include <pqxx/pqxx>

#include "tests/support/daemon_process.hpp"
#include "tests/support/pg_harness.hpp"

namespace mailgate {
namespace {

using namespace std::chrono_literals;
using test::DaemonProcess;
using test::http_get;
using test::http_request;

bool contains(const std::string& haystack, const std::string& needle) { return haystack.find(needle) != std::string::npos; }

// Polls `probe` until it returns true or `limit` passes; returns the time it took.
template <class F>
std::optional<std::chrono::milliseconds> time_until(F probe, std::chrono::milliseconds limit) {
  const auto start = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - start < limit) {
    if (probe()) return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
    std::this_thread::sleep_for(50ms);
  }
  return std::nullopt;
}

TEST(Daemon, HealthzAndReadyz) {
  DaemonProcess d(test::fresh_database());
  d.start();
  auto h = http_get(d.http_port(), "/healthz");
  EXPECT_EQ(h.status, 200);
  EXPECT_EQ(h.body, R"({"status":"ok"})");
  auto r = http_get(d.http_port(), "/readyz");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(contains(r.body, R"("status":"ok")")) << r.body;
  EXPECT_TRUE(contains(d.log(), "event=migration_applied version=1")) << "serve applies pending migrations";
  EXPECT_EQ(d.stop(SIGTERM), 0) << d.log();
}

TEST(Daemon, ReadyzTurns503WhenPostgresStopsAndRecoversWithoutRestart) {
  test::PgCluster cluster(test::temp_dir("pg-readyz") / "data");
  DaemonProcess d(cluster.url());
  d.start();
  ASSERT_EQ(http_get(d.http_port(), "/readyz").status, 200);

  cluster.stop();
  auto down = time_until([&] { return http_get(d.http_port(), "/readyz").status == 503; }, 5s);
  ASSERT_TRUE(down) << "/readyz must answer 503 within 5 s of PostgreSQL stopping\n" << d.log();
  auto r = http_get(d.http_port(), "/readyz");
  EXPECT_TRUE(contains(r.body, "database unreachable")) << r.body;
  EXPECT_EQ(http_get(d.http_port(), "/healthz").status, 200) << "liveness does not depend on the database";

  cluster.start();
  auto up = time_until([&] { return http_get(d.http_port(), "/readyz").status == 200; }, 10s);
  EXPECT_TRUE(up) << d.log();
  EXPECT_TRUE(d.running());
  std::printf("readyz: 503 after %lld ms, 200 again after %lld ms\n", static_cast<long long>(down->count()),
              static_cast<long long>(up ? up->count() : -1));
}

TEST(Daemon, ReadyzRefusesASchemaNewerThanTheBinary) {
  const auto url = test::fresh_database();
  DaemonProcess d(url);
  d.start();
  {
    pqxx::connection c(url);
    pqxx::work tx(c);
    tx.exec("INSERT INTO schema_migrations (version, name, checksum) VALUES (9999, 'future', 'x')");
    tx.commit();
  }
  auto r = http_get(d.http_port(), "/readyz");
  EXPECT_EQ(r.status, 503);
  EXPECT_TRUE(contains(r.body, "9999 is newer than this binary")) << r.body;
}

TEST(Daemon, MetricsInPrometheusFormat) {
  DaemonProcess d(test::fresh_database());
  d.start();
  http_get(d.http_port(), "/readyz");
  http_get(d.http_port(), "/nope");
  auto m = http_get(d.http_port(), "/metrics");
  ASSERT_EQ(m.status, 200);
  EXPECT_TRUE(contains(m.headers, "text/plain; version=0.0.4")) << m.headers;
  EXPECT_TRUE(contains(m.body, "# TYPE mailgate_uptime_seconds gauge\nmailgate_uptime_seconds ")) << m.body;
  EXPECT_TRUE(contains(m.body, "mailgate_http_requests_total{route=\"/readyz\",status=\"200\"} 1\n")) << m.body;
  EXPECT_TRUE(contains(m.body, "mailgate_http_requests_total{route=\"unmatched\",status=\"404\"} 1\n")) << m.body;
  EXPECT_TRUE(contains(m.body, "mailgate_http_requests_total{route=\"/healthz\",status=\"200\"}")) << m.body;
  EXPECT_TRUE(contains(m.body, "mailgate_db_pool_size 2\n")) << m.body;
  // In use: 0 to 2 (background work such as the mailbox watcher may hold one at this moment).
  const auto at = m.body.find("\nmailgate_db_pool_in_use ");
  ASSERT_NE(at, std::string::npos) << m.body;
  const int in_use = std::stoi(m.body.substr(at + 25));
  EXPECT_GE(in_use, 0);
  EXPECT_LE(in_use, 2);
}

TEST(Daemon, ErrorsAreJsonWithCodeAndMessage) {
  DaemonProcess d(test::fresh_database(), "");
  d.start();
  auto nf = http_get(d.http_port(), "/api/v1/nothing-here");
  EXPECT_EQ(nf.status, 404);
  EXPECT_EQ(nf.body, R"({"error":{"code":"not_found","message":"no such resource"}})");
  auto na = http_request(d.http_port(), "POST", "/healthz", "{}");
  EXPECT_EQ(na.status, 405);
  EXPECT_TRUE(contains(na.headers, "Allow: GET")) << na.headers;
  EXPECT_TRUE(contains(na.body, R"("code":"method_not_allowed")")) << na.body;
}

TEST(Daemon, RequestSizeLimits) {
  DaemonProcess d(test::fresh_database(), "");
  d.edit_config("[http]\n", "[http]\nmax_body_bytes = 2048\nmax_header_bytes = 2048\nread_timeout_seconds = 1\n");
  d.start();
  auto big = http_request(d.http_port(), "POST", "/healthz", std::string(4096, 'x'));
  EXPECT_EQ(big.status, 413);
  EXPECT_TRUE(contains(big.body, "body_too_large")) << big.body;
  auto headers = http_request(d.http_port(), "GET", "/healthz", "", "X-Filler: " + std::string(4096, 'y') + "\r\n");
  EXPECT_EQ(headers.status, 431);
  auto garbage = http_request(d.http_port(), "G@T", "/healthz");
  EXPECT_EQ(garbage.status, 400);

  // A client that sends half a request and stalls is cut off after read_timeout_seconds.
  auto started = std::chrono::steady_clock::now();
  auto slow = http_request(d.http_port(), "GET", "/healthz", "", "Content-Length: 10\r\n", 5s);
  EXPECT_EQ(slow.status, 0);
  EXPECT_LT(std::chrono::steady_clock::now() - started, 3s);
  EXPECT_EQ(http_get(d.http_port(), "/healthz").status, 200) << "the server lives on";
}

TEST(Daemon, GracefulShutdownFinishesTheRequestInFlight) {
  const auto url = test::fresh_database();
  DaemonProcess d(url);
  d.start();

  // Hold a lock that /readyz's query waits for, so that its request is in flight when SIGTERM
  // arrives; let go of it after the signal.
  pqxx::connection locker(url);
  pqxx::work lock_tx(locker);
  lock_tx.exec("LOCK TABLE schema_migrations IN ACCESS EXCLUSIVE MODE");
  auto in_flight = std::async(std::launch::async, [&] { return http_get(d.http_port(), "/readyz"); });
  pqxx::connection observer(url);
  auto waiting = time_until([&] {
    pqxx::work tx(observer);
    return tx.exec("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")[0][0].as<int>() > 0;
  }, 5s);
  ASSERT_TRUE(waiting) << "the /readyz query never waited for the lock\n" << d.log();

  kill(d.pid(), SIGTERM);
  auto refused = time_until([&] { return http_get(d.http_port(), "/healthz").status == 0; }, 3s);
  EXPECT_TRUE(refused) << "new connections must be refused once shutdown began";
  EXPECT_TRUE(d.running()) << "the daemon must wait for the request in flight";
  std::this_thread::sleep_for(300ms);
  lock_tx.abort();

  auto r = in_flight.get();
  EXPECT_EQ(r.status, 200) << r.body << "\n" << d.log();
  EXPECT_TRUE(contains(r.headers, "Connection: close")) << r.headers;
  EXPECT_EQ(d.stop(0, 10s), 0) << d.log();
  EXPECT_TRUE(contains(d.log(), "event=shutdown_done")) << d.log();
}

TEST(Daemon, ShutdownCutsOffRequestsThatOutliveTheGracePeriod) {
  const auto url = test::fresh_database();
  DaemonProcess d(url, "");
  d.edit_config("shutdown_grace_seconds = 10", "shutdown_grace_seconds = 1");
  d.start();
  pqxx::connection locker(url);
  pqxx::work lock_tx(locker);
  lock_tx.exec("LOCK TABLE schema_migrations IN ACCESS EXCLUSIVE MODE");
  auto in_flight = std::async(std::launch::async, [&] { return http_get(d.http_port(), "/readyz"); });
  std::this_thread::sleep_for(500ms);
  const auto started = std::chrono::steady_clock::now();
  EXPECT_EQ(d.stop(SIGTERM, 10s), 0) << d.log();
  EXPECT_LT(std::chrono::steady_clock::now() - started, 4s);
  EXPECT_TRUE(contains(d.log(), "event=http_shutdown_forced")) << d.log();
  in_flight.get();
  lock_tx.abort();
}

TEST(Daemon, StartsWhenTheDatabaseComesUpLater) {
  test::PgCluster cluster(test::temp_dir("pg-late") / "data");
  const auto url = cluster.url();
  cluster.stop();
  DaemonProcess d(url);
  std::thread starter([&] {
    std::this_thread::sleep_for(1500ms);
    cluster.start();
  });
  d.start();  // returns once /healthz answers, i.e. after migrations ran
  starter.join();
  EXPECT_EQ(http_get(d.http_port(), "/readyz").status, 200);
  EXPECT_TRUE(contains(d.log(), "event=db_unavailable_at_start")) << d.log();
}

TEST(Daemon, MissingSecretsKeyIsAConfigurationError) {
  DaemonProcess d(test::fresh_database());
  std::filesystem::remove(d.dir() / "secrets.key");
  std::string out;
  int status = test::run_command(std::string(MAILGATE_BINARY) + " serve --config " + d.config_path().string() + " 2>&1", &out);
  EXPECT_EQ(status, 78) << out;
  EXPECT_TRUE(contains(out, "secrets key file")) << out;
}

TEST(Daemon, WebUiIsServed) {
  DaemonProcess d(test::fresh_database());
  d.start();
  auto index = http_get(d.http_port(), "/");
  EXPECT_EQ(index.status, 200);
  EXPECT_TRUE(contains(index.headers, "Content-Type: text/html")) << index.headers;
  EXPECT_TRUE(contains(index.body, "<title>mailgate</title>"));
  EXPECT_EQ(http_get(d.http_port(), "/ui/app.js").status, 200);
  EXPECT_EQ(http_get(d.http_port(), "/ui/missing.js").status, 404);
}

}  // namespace
}  // namespace mailgate
