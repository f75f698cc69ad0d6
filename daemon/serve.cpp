// `mailgated serve`: wires the components, runs the event loop, and shuts down in two phases.
//
// Start: pending migrations are applied (retried while the database is unreachable), then the
// listeners are bound, then systemd hears READY=1. While running, the event loop itself sends the
// watchdog keep-alive, so a stuck loop gets the process restarted. On SIGTERM/SIGINT: STOPPING=1,
// /readyz turns 503, listeners close, in-flight work gets [daemon].shutdown_grace_seconds, exit 0.
#include <csignal>
#include <cstdlib>
#include <thread>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <pqxx/pqxx>
#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>

#include "daemon/api.hpp"
#include "daemon/graph_sync.hpp"
#include "daemon/graph_slots.hpp"
#include "daemon/graph_tokens.hpp"
#include "daemon/http_server.hpp"
#include "daemon/mailbox_sync.hpp"
#include "daemon/mailgun_inbound.hpp"
#include "daemon/metrics.hpp"
#include "daemon/outbox.hpp"
#include "daemon/router.hpp"
#include "daemon/serve.hpp"
#include "daemon/services.hpp"
#include "daemon/smtp_server.hpp"
#include "store/listener.hpp"
#include "store/messages.hpp"
#include "store/migrate.hpp"
#include "store/run.hpp"
#include "util/crypto.hpp"

namespace mailgate {

namespace asio = boost::asio;

std::filesystem::path secrets_key_path(const Config& config) {
  if (!config.secrets.key_file.empty()) return config.secrets.key_file;
  if (const char* dir = std::getenv("CREDENTIALS_DIRECTORY")) return std::filesystem::path(dir) / "secrets-key";
  return {};
}

namespace {

asio::awaitable<void> watchdog_loop(std::atomic<bool>& stopping) {
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) <= 0) co_return;
  asio::steady_timer timer(co_await asio::this_coro::executor);
  while (!stopping) {
    sd_notify(0, "WATCHDOG=1");
    timer.expires_after(std::chrono::microseconds(usec / 2));
    co_await timer.async_wait(asio::use_awaitable);
  }
}

}  // namespace

int serve(const Config& config) {
  std::optional<SecretBox> secrets;
  try {
    auto key = secrets_key_path(config);
    if (key.empty())
      throw std::invalid_argument(
          "secrets.key_file is not set and no systemd credential 'secrets-key' is present ($CREDENTIALS_DIRECTORY)");
    secrets.emplace(SecretBox::from_file(key));
  } catch (const std::invalid_argument& e) {
    spdlog::critical("event=config_invalid reason=\"{}\"", e.what());
    return kExitConfig;
  }

  // Before the io_context: coroutines it destroys at the end may still hold or wait for a slot.
  GraphSlots graph_slots(config.graph.max_concurrent_per_mailbox);
  asio::io_context io(config.daemon.io_threads);
  // The outbox has an event loop and a thread of its own. On the shared loop its strand moved
  // between the io threads, and every hand-over woke the other thread: bench/run-outbox measured
  // 0.34 ms of mailgated's CPU per message on the shared loop, 0.28 ms on its own
  // (bench/README.md). It shares nothing with the main loop but thread-safe parts: the store, and
  // Graph's tokens and slots, which post to their own strands. Declared before the Store, as `io`.
  asio::io_context outbox_io(1);
  auto outbox_io_work = asio::make_work_guard(outbox_io);
  Store store(config.database);
  Metrics metrics;
  metrics.gauge("mailgate_db_pool_size", "Connections in the database pool.", [&] { return store.size(); });
  metrics.gauge("mailgate_db_pool_in_use", "Database connections running a job.", [&] { return store.in_use(); });
  metrics.gauge("mailgate_db_pool_queued", "Database jobs waiting for a connection.", [&] { return store.queued(); });
  std::atomic<bool> stopping{false};
  Services services{config, store, metrics, *secrets, stopping, [] {}};
  GraphTokens graph_tokens(io.get_executor(), config);
  services.graph_tokens = &graph_tokens;
  services.graph_slots = &graph_slots;
  Router router;
  register_health_routes(router, services);
  register_web_routes(router);
  register_mailgun_routes(router, services);
  Api api(router, services);
  register_api_routes(api);
  HttpServer http(io, config.http, router, metrics);
  MailboxSupervisor mailboxes(io, services);
  GraphSupervisor graph_mailboxes(io, services);
  OutboxWorker outbox(outbox_io, services);
  SmtpServer smtp(io, services);
  services.outbox_wake = [&outbox] { outbox.wake(); };
  // Rows that others queue (another daemon, a script): at once, not at the next poll.
  StoreListener outbox_listener(config.database, "mailgate_outbox", [&outbox] { outbox.wake(); });
  services.mailboxes_changed = [&mailboxes, &graph_mailboxes] {
    mailboxes.wake();
    graph_mailboxes.wake();
  };

  int exit_code = 0;
  auto main_strand = asio::make_strand(io);
  asio::signal_set signals(main_strand, SIGINT, SIGTERM);

  // Removed messages older than the retention are purged, a bounded batch per transaction.
  asio::steady_timer purge_timer(main_strand);
  auto purge_loop = [&]() -> asio::awaitable<void> {
    constexpr int kBatch = 500;
    while (!stopping) {
      try {
        for (int purged = kBatch; purged == kBatch && !stopping;) {
          auto op = store_transact(store, [retention = config.messages.retention](pqxx::work& tx) {
            return purge_removed_messages(tx, retention, kBatch);
          });
          purged = co_await std::move(op);
          if (purged) spdlog::info("event=messages_purged count={}", purged);
        }
      } catch (const std::exception& e) {
        spdlog::warn("event=messages_purge_failed reason=\"{}\"", e.what());
      }
      purge_timer.expires_after(config.messages.purge_interval);
      co_await purge_timer.async_wait(asio::as_tuple(asio::use_awaitable));
    }
  };

  auto shutdown = [&]() -> asio::awaitable<void> {
    stopping = true;
    purge_timer.cancel();
    sd_notify(0, "STOPPING=1");
    spdlog::info("event=shutdown_started grace_s={}", config.daemon.shutdown_grace.count());
    mailboxes.stop();
    graph_mailboxes.stop();
    outbox.stop();
    if (smtp.enabled()) co_await smtp.shutdown(config.daemon.shutdown_grace);
    co_await http.shutdown(config.daemon.shutdown_grace);
    spdlog::info("event=shutdown_done");
    io.stop();
  };
  signals.async_wait([&](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    spdlog::info("event=signal signal={}", sig == SIGTERM ? "TERM" : "INT");
    asio::co_spawn(main_strand, shutdown(), asio::detached);
  });

  auto startup = [&]() -> asio::awaitable<void> {
    asio::steady_timer timer(co_await asio::this_coro::executor);
    for (int attempt = 0; !stopping; ++attempt) {
      try {
        auto applied = co_await store_run(store, [](pqxx::connection_base& c) { return migrate(c); },
                                          std::chrono::minutes(30));
        spdlog::info("event=migrations_current applied_now={}", applied.size());
        break;
      } catch (const StoreUnavailable& e) {
        spdlog::warn("event=db_unavailable_at_start attempt={} reason=\"{}\"", attempt, e.what());
      }
      timer.expires_after(std::chrono::seconds(std::min(2 << std::min(attempt, 4), 30)));
      co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    if (stopping) co_return;
    // The SMTP receiver first: once /healthz answers, every listener is up (its start loads
    // the public suffix list, which takes a while in a sanitizer build).
    smtp.start();
    for (std::size_t i = 0; i < smtp.ports().size(); ++i)
      spdlog::info("event=smtp_listening listen={} port={}", config.smtp_receiver.listen[i], smtp.ports()[i]);
    http.start();
    spdlog::info("event=listening url=http://{}:{}/", config.http.address, http.port());
    sd_notify(0, "READY=1\nSTATUS=serving");
    mailboxes.start();
    graph_mailboxes.start();
    outbox.start();
    asio::co_spawn(main_strand, purge_loop(), asio::detached);
    co_await watchdog_loop(stopping);
  };
  asio::co_spawn(main_strand, startup(), [&](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      spdlog::critical("event=startup_failed reason=\"{}\"", x.what());
    }
    exit_code = 1;
    io.stop();
  });

  std::vector<std::thread> threads;
  std::thread outbox_thread([&] { outbox_io.run(); });
  for (int i = 1; i < config.daemon.io_threads; ++i) threads.emplace_back([&] { io.run(); });
  io.run();
  for (auto& t : threads) t.join();
  // The outbox was told to stop with the rest; what it has not recorded is sent again after
  // its lease (store/outbox.hpp), as when the daemon is killed.
  outbox_io.stop();
  outbox_thread.join();
  return exit_code;
}

}  // namespace mailgate
