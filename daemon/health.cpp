// /healthz, /readyz and /metrics.
// - /healthz: the process is alive and its event loop answers. Never touches the database.
// - /readyz: the database answers within 2 s and its schema is the one this binary expects;
//   503 with the reason otherwise, and while shutting down (a load balancer stops sending).
// - /metrics: Prometheus text format.
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <pqxx/pqxx>

#include "daemon/metrics.hpp"
#include "daemon/router.hpp"
#include "daemon/services.hpp"
#include "store/migrate.hpp"
#include "store/run.hpp"

namespace mailgate {

namespace {
constexpr auto kReadyTimeout = std::chrono::seconds(2);

HttpResponse not_ready(std::string reason) {
  return HttpResponse::json(503, boost::json::serialize(boost::json::object{{"status", "unavailable"}, {"reason", reason}}));
}
}  // namespace

void register_health_routes(Router& router, Services& s) {
  router.add("GET", "/healthz", [](HttpRequest&) -> boost::asio::awaitable<HttpResponse> {
    co_return HttpResponse::json(200, R"({"status":"ok"})");
  });

  router.add("GET", "/readyz", [&s](HttpRequest&) -> boost::asio::awaitable<HttpResponse> {
    if (s.stopping) co_return not_ready("shutting down");
    MigrationStatus status;
    try {
      status = co_await store_run(s.store, [](pqxx::connection_base& c) { return migration_status(c); }, kReadyTimeout);
    } catch (const StoreTimeout&) {
      co_return not_ready("the database did not answer within 2 s");
    } catch (const std::exception& e) {
      co_return not_ready(e.what());
    }
    if (status.applied < status.known)
      co_return not_ready("database schema is at migration " + std::to_string(status.applied) + ", this binary needs " +
                          std::to_string(status.known));
    if (status.applied > status.known)
      co_return not_ready("database schema " + std::to_string(status.applied) + " is newer than this binary (" +
                          std::to_string(status.known) + ")");
    co_return HttpResponse::json(
        200, boost::json::serialize(boost::json::object{{"status", "ok"}, {"schema_version", status.applied}}));
  });

  router.add("GET", "/metrics", [&s](HttpRequest&) -> boost::asio::awaitable<HttpResponse> {
    HttpResponse r = HttpResponse::text(200, s.metrics.render());
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    co_return r;
  });
}

}  // namespace mailgate
