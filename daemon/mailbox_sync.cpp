#include "daemon/mailbox_sync.hpp"

#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <utility>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <pqxx/pqxx>
#include <spdlog/spdlog.h>

#include "daemon/graph_tokens.hpp"
#include "daemon/mailbox_health.hpp"
#include "protocol/imap_client.hpp"
#include "protocol/mime.hpp"
#include "rules/mailbox_sync.hpp"
#include "store/audit.hpp"
#include "store/ingest.hpp"
#include "store/run.hpp"
#include "store/sql.hpp"
#include "util/crypto.hpp"

namespace mailgate {

namespace asio = boost::asio;
using asio::awaitable;

namespace {

constexpr auto kRecheck = std::chrono::seconds(2);  // how often a waiting loop reads its mailbox again (a failed one: for a save or reconnect)
constexpr auto kIdleRound = std::chrono::seconds(60);  // config changes are noticed between rounds
constexpr int kParseThreads = 2;

// The cursor moves with its batch; the mailbox's last sync time with it.
constexpr const char* kCursorUpdate =
    "WITH cursor AS (INSERT INTO imap_cursors (mailbox_id, folder, uidvalidity, last_uid) VALUES ($1, $2, $3, $4) "
    "ON CONFLICT (mailbox_id) DO UPDATE SET folder = $2, uidvalidity = $3, last_uid = greatest("
    "CASE WHEN imap_cursors.uidvalidity = $3 THEN imap_cursors.last_uid ELSE 0 END, $4), updated_at = now()) "
    "UPDATE mailboxes SET last_sync_at = now() WHERE id = $1";
// After-import actions committed with their batch and not yet done (migration 0009).
constexpr const char* kPendingActionInsert =
    "INSERT INTO imap_pending_actions (mailbox_id, folder, uidvalidity, uids, action, move_folder) "
    "VALUES ($1, $2, $3, $4::bigint[], $5, $6) RETURNING id";
constexpr const char* kPendingActionsOf =
    "SELECT id, folder, uidvalidity, uids, action, move_folder FROM imap_pending_actions WHERE mailbox_id = $1 ORDER BY id";
constexpr const char* kPendingActionsDelete = "DELETE FROM imap_pending_actions WHERE id = ANY($1::bigint[])";

struct MailboxConfig {
  std::int64_t id = 0;
  bool active = false;
  std::string address, host, security, username, password, folder, after_import, move_folder, health, updated_at;
  std::uint16_t port = 993;
  std::chrono::seconds poll{60};
  std::string auth = "password";  // imap_auth: password | xoauth2 (Office 365: a token from the ms365_* credentials)
  GraphCredentials oauth;
};

MailboxConfig load_config(pqxx::dbtransaction& tx, const SecretBox& secrets, std::int64_t id) {
  MailboxConfig c;
  auto r = tx.exec_params(
      "SELECT active AND incoming_type = 'imap', address, coalesce(imap_host, ''), coalesce(imap_security, 'tls'), "
      "coalesce(imap_username, address), imap_password, coalesce(imap_folder, ''), imap_after_import, "
      "coalesce(imap_move_folder, ''), health, updated_at::text, coalesce(imap_port, 993), poll_interval_seconds, "
      "imap_auth, coalesce(ms365_tenant_id, ''), coalesce(ms365_client_id, ''), ms365_client_secret "
      "FROM mailboxes WHERE id = $1",
      id);
  if (r.empty()) return c;
  const auto& row = r[0];
  c.id = id;
  c.auth = row[13].as<std::string>();
  c.active = row[0].as<bool>() && !(c.auth == "xoauth2" ? row[16].is_null() : row[5].is_null());
  c.address = row[1].as<std::string>();
  c.host = row[2].as<std::string>();
  c.security = row[3].as<std::string>();
  c.username = row[4].as<std::string>();
  if (!row[5].is_null()) c.password = secrets.open(pqxx::binarystring(row[5]).str());
  c.folder = row[6].as<std::string>();
  c.after_import = row[7].as<std::string>();
  c.move_folder = row[8].as<std::string>();
  c.health = row[9].as<std::string>();
  c.updated_at = row[10].as<std::string>();
  c.port = static_cast<std::uint16_t>(row[11].as<int>());
  c.poll = std::chrono::seconds(row[12].as<int>());
  if (c.auth == "xoauth2") {
    c.oauth.tenant = row[14].as<std::string>();
    c.oauth.client_id = row[15].as<std::string>();
    if (!row[16].is_null()) c.oauth.client_secret = secrets.open(pqxx::binarystring(row[16]).str());
    c.oauth.scope = kOutlookScope;
  }
  return c;
}

}  // namespace

struct MailboxSupervisor::Impl : std::enable_shared_from_this<MailboxSupervisor::Impl> {
  Impl(asio::io_context& io, Services& s) : io(io), s(s), watch_timer(asio::make_strand(io)) {}

  asio::io_context& io;
  Services& s;
  asio::steady_timer watch_timer;
  std::atomic<bool> stopping{false};
  bool rescan = false;  // on the watch strand: a wake() came while the watch was not waiting
  std::mutex mutex;
  std::map<std::int64_t, std::shared_ptr<imap::Client>> running;  // mailbox -> its live connection (may be null)
  std::mt19937_64 random{std::random_device{}()};
  // GMime parses run here, off the I/O threads and beside the store's threads, so that fetching,
  // parsing and inserting overlap. Shared by every mailbox.
  asio::thread_pool parse_pool{kParseThreads};

  double jitter() {
    std::lock_guard lock(mutex);
    return std::uniform_real_distribution<double>(0.0, 1.0)(random);
  }

  awaitable<void> sleep(std::chrono::steady_clock::duration d) {
    asio::steady_timer t(co_await asio::this_coro::executor);
    t.expires_after(d);
    co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
  }

  awaitable<void> watch() {
    auto self = shared_from_this();
    while (!stopping) {
      rescan = false;
      try {
        auto op = store_run(s.store, [](pqxx::connection_base& c) {
          std::vector<std::int64_t> ids;
          pqxx::read_transaction tx(c);
          for (const auto& r : tx.exec("SELECT id FROM mailboxes WHERE active AND incoming_type = 'imap' AND "
                                        "(imap_password IS NOT NULL OR (imap_auth = 'xoauth2' AND ms365_client_secret IS NOT NULL))"))
            ids.push_back(r[0].as<std::int64_t>());
          return ids;
        });
        auto ids = co_await std::move(op);
        for (auto id : ids) {
          std::lock_guard lock(mutex);
          if (running.count(id)) continue;
          running[id] = nullptr;
          asio::co_spawn(asio::make_strand(io), mailbox_loop(id), [self, id](std::exception_ptr e) {
            if (!e) return;
            try {
              std::rethrow_exception(e);
            } catch (const std::exception& x) {
              spdlog::error("event=mailbox_loop_crashed mailbox={} reason=\"{}\"", id, x.what());
            }
            std::lock_guard lock(self->mutex);
            self->running.erase(id);  // the watch starts it again
          });
        }
      } catch (const std::exception& e) {
        spdlog::warn("event=mailbox_watch_failed reason=\"{}\"", e.what());
      }
      if (rescan) continue;
      watch_timer.expires_after(s.config.daemon.mailbox_watch);
      co_await watch_timer.async_wait(asio::as_tuple(asio::use_awaitable));
    }
  }

  awaitable<MailboxConfig> config_of(std::int64_t id) {
    auto op = store_transact(s.store, [&secrets = s.secrets, id](pqxx::work& tx) { return load_config(tx, secrets, id); });
    co_return co_await std::move(op);
  }

  awaitable<void> health(std::int64_t id, Health h, const std::string& reason) {
    auto op = store_transact(s.store, [id, h, reason](pqxx::work& tx) { mailbox_set_health(tx, id, h, reason); });
    co_await std::move(op);
  }

  // Writes the health after a failure; a store that is down too only gets logged.
  awaitable<void> record_failure(std::int64_t id, Health h, const std::string& reason) {
    std::optional<std::string> failure;
    try {
      co_await health(id, h, reason);
    } catch (const std::exception& e) {
      failure = e.what();
    }
    if (failure) spdlog::warn("event=mailbox_health_write_failed mailbox={} reason=\"{}\"", id, *failure);
  }

  awaitable<void> mailbox_loop(std::int64_t id) {
    auto self = shared_from_this();
    int attempt = 0;
    auto failing_since = std::chrono::steady_clock::now();
    while (!stopping) {
      MailboxConfig cfg;
      bool loaded = false;
      try {
        cfg = co_await config_of(id);
        loaded = true;
      } catch (const std::exception& e) {
        spdlog::warn("event=mailbox_config_failed mailbox={} reason=\"{}\"", id, e.what());
      }
      if (!loaded) {  // (no co_await inside a catch block: C++20)
        co_await sleep(std::chrono::seconds(2));
        continue;
      }
      if (!cfg.active) break;
      if (cfg.health == "failed") {  // an admin's save or reconnect sets it back to ok
        co_await sleep(kRecheck);
        continue;
      }
      std::optional<imap::Error> imap_error;
      std::optional<std::string> store_error;
      bool synced = false;  // a batch committed or the mailbox caught up on this connection
      try {
        co_await sync_connection(cfg, synced);
        attempt = 0;
      } catch (const imap::Error& e) {
        imap_error = e;
      } catch (const std::exception& e) {  // the store: unreachable, timed out
        store_error = e.what();
      }
      // A failure after a successful sync is a new incident: its backoff and the time towards
      // giving up start afresh (not counted on from an earlier incident, days ago).
      if (synced) attempt = 0;
      {
        std::lock_guard lock(mutex);
        running[id] = nullptr;  // the connection is gone
      }
      if (imap_error) {
        if (attempt == 0) failing_since = std::chrono::steady_clock::now();
        const auto failing_for = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - failing_since);
        auto d = on_sync_failure(imap_error->permanent(), attempt, failing_for, s.config.imap.give_up_after, jitter());
        spdlog::warn("event=mailbox_sync_failed mailbox={} attempt={} health={} retry_ms={} reason=\"{}\"", id, attempt,
                     to_string(d.health), d.retry_in.count(), imap_error->what());
        ++attempt;
        const std::string reason = imap_error->what();  // named: see store/run.hpp on GCC 12 and co_await
        co_await record_failure(id, d.health, reason);
        if (d.health == Health::retrying) co_await sleep(d.retry_in);
      } else if (store_error) {
        spdlog::warn("event=mailbox_sync_store_failed mailbox={} reason=\"{}\"", id, *store_error);
        co_await sleep(backoff(attempt++, jitter()));
      }
    }
    std::lock_guard lock(mutex);
    running.erase(id);
  }

  // Office 365 over IMAP: SASL XOAUTH2 with a token for outlook.office365.com from the shared
  // token source. The token endpoint's permanent refusals (expired secret, ...) count as refused
  // credentials; a token the server refuses is dropped so the next attempt asks for a new one.
  awaitable<void> login_xoauth2(imap::Client& client, const MailboxConfig& cfg) {
    std::string token;
    std::optional<imap::Error> failure;
    try {
      auto op = s.graph_tokens->token(cfg.oauth);
      token = co_await std::move(op);
    } catch (const oauth2::Error& e) {
      failure.emplace(e.permanent ? imap::Error::Kind::auth : imap::Error::Kind::io, std::string("token: ") + e.what());
    } catch (const http::Error& e) {
      failure.emplace(imap::Error::Kind::io, std::string("token endpoint: ") + e.what());
    }
    if (failure) throw *failure;
    try {
      co_await client.authenticate_xoauth2(cfg.username, token);
    } catch (const imap::Error& e) {
      if (e.kind == imap::Error::Kind::auth) s.graph_tokens->invalidate(cfg.oauth);
      throw;
    }
  }

  // One connection's life: sync, then IDLE or poll, until the configuration changes or we stop.
  // `synced` becomes true once a batch is committed or the folder is caught up.
  awaitable<void> sync_connection(const MailboxConfig& cfg, bool& synced) {
    // Named first: a temporary beside co_await in one expression is destroyed twice by GCC 12.
    const auto executor = co_await asio::this_coro::executor;
    imap::Endpoint endpoint{cfg.host, cfg.port, cfg.security, s.config.tls.ca_file.string()};
    auto client = std::make_shared<imap::Client>(executor, std::move(endpoint));
    {
      std::lock_guard lock(mutex);
      running[cfg.id] = client;
    }
    if (stopping) co_return;
    spdlog::debug("event=mailbox_connect mailbox={} host={} port={} security={}", cfg.id, cfg.host, cfg.port, cfg.security);
    co_await client->connect();
    if (cfg.auth == "xoauth2")
      co_await login_xoauth2(*client, cfg);
    else
      co_await client->login(cfg.username, cfg.password);
    spdlog::debug("event=mailbox_login mailbox={}", cfg.id);
    std::vector<FolderInfo> folders;
    std::map<std::string, std::string> wire_of;
    for (const auto& f : co_await client->list_folders()) {
      folders.push_back({f.name, f.delimiter, f.attributes.count("\\INBOX") > 0, !f.attributes.count("\\NOSELECT")});
      wire_of[f.name] = f.wire_name;
    }
    auto folder = choose_folder(folders, cfg.folder);
    if (!folder) throw imap::Error(imap::Error::Kind::config, "folder '" + cfg.folder + "' does not exist on the server");
    std::string move_target;
    if (cfg.after_import == "move") {
      auto target = choose_folder(folders, cfg.move_folder);
      if (!target) throw imap::Error(imap::Error::Kind::config, "folder '" + cfg.move_folder + "' (to move imported mail to) does not exist");
      move_target = wire_of[*target];
    }
    auto info = co_await client->select(wire_of[*folder]);
    co_await health(cfg.id, Health::ok, "");
    co_await replay_actions(*client, cfg, *folder, info.uidvalidity, folders, wire_of);
    const bool can_idle = client->has_capability("IDLE");
    while (!stopping) {
      co_await fetch_new(*client, cfg, *folder, info.uidvalidity, move_target, synced);
      synced = true;
      auto now_cfg = co_await config_of(cfg.id);
      if (now_cfg.updated_at != cfg.updated_at || !now_cfg.active || now_cfg.health == "failed") break;  // reconnect with the new settings
      if (can_idle)
        co_await client->idle(std::min<std::chrono::milliseconds>(kIdleRound, s.config.imap.idle_restart));
      else
        co_await sleep(cfg.poll);
    }
    co_await client->logout();
  }

  // One fetched message: its bytes from the FETCH, parsed with GMime on the parse pool as soon as
  // it has arrived (while the rest of its batch is still being fetched).
  struct Arrived {
    std::uint32_t uid = 0;
    std::string raw;
    ParsedMessage parsed;
    std::vector<std::optional<ContentSpan>> spans;
    std::future<void> ready;  // the parse
  };
  using Batch = std::vector<std::shared_ptr<Arrived>>;

  // What a batch's transaction writes besides the messages.
  struct CommitPlan {
    std::int64_t mailbox = 0;
    std::string folder;
    std::uint32_t uidvalidity = 0;
    bool resync = false;
    std::uint32_t last_uid = 0;                 // the cursor after this batch
    std::vector<std::uint32_t> uids;            // fetched
    std::string action, move_folder;            // after-import action, recorded as pending
    std::vector<std::int64_t> actions_done;     // pending actions of earlier batches now done
  };

  // One batch being committed in the background (on the strand; the work on a store thread).
  struct BatchCommit {
    explicit BatchCommit(asio::any_io_executor ex) : done_timer(ex) {}
    std::vector<std::uint32_t> uids;
    std::uint32_t last_uid = 0;
    bool done = false;
    int stored = 0;
    std::optional<std::int64_t> action_id;  // its pending after-import action
    std::exception_ptr error;
    asio::steady_timer done_timer;  // cancelled when done
  };

  std::shared_ptr<BatchCommit> start_commit(asio::any_io_executor ex, CommitPlan plan, std::shared_ptr<Batch> batch) {
    auto commit = std::make_shared<BatchCommit>(ex);
    for (const auto& m : *batch) plan.uids.push_back(m->uid);
    commit->uids = plan.uids;
    commit->last_uid = plan.last_uid;
    commit->done_timer.expires_at(std::chrono::steady_clock::time_point::max());
    asio::co_spawn(ex, commit_batch(commit, std::move(batch), std::move(plan)), asio::detached);
    return commit;
  }

  // The messages of a fetched batch as ingest items (waiting for the parses still running).
  static std::vector<IngestItem> ingest_items(Batch& batch, const CommitPlan& plan) {
    std::vector<IngestItem> items(batch.size());
    for (std::size_t i = 0; i < batch.size(); ++i) {
      auto& m = *batch[i];
      m.ready.get();  // parsed by now, or nearly
      auto& item = items[i];
      item.in.mailbox_id = plan.mailbox;
      item.in.source = "imap";
      item.in.source_key = std::to_string(plan.uidvalidity) + ":" + std::to_string(m.uid);
      item.in.raw = std::move(m.raw);
      item.in.dedupe_by_content = plan.resync;
      item.in.transport_tls = true;
      item.parsed = std::move(m.parsed);
      for (const auto& span : m.spans) {
        std::optional<RawSpan> kept;
        if (span) kept = RawSpan{static_cast<std::int64_t>(span->offset), static_cast<std::int64_t>(span->length), span->base64 ? "base64" : "identity"};
        item.attachment_spans.push_back(std::move(kept));
      }
    }
    return items;
  }

  struct Committed {
    int stored = 0;
    std::optional<std::int64_t> action_id;
  };

  // (Parameters by value: this coroutine outlives its caller's statement.)
  awaitable<void> commit_batch(std::shared_ptr<BatchCommit> commit, std::shared_ptr<Batch> batch, CommitPlan plan) {
    auto self = shared_from_this();
    // The batch, its messages' links, the cursor and the pending after-import action commit
    // together, in a handful of statements (store/ingest.hpp). The store job owns what it touches
    // (no I/O object). The items are made once: a job that meets a broken connection runs again
    // (store/store.hpp).
    auto items = std::make_shared<std::vector<IngestItem>>();
    auto op = store_run(s.store, [batch, items, plan = std::move(plan)](pqxx::connection_base& c) {
      if (!batch->empty()) {
        *items = ingest_items(*batch, plan);
        batch->clear();
      }
      pqxx::work tx(c);
      const LinkPolicy policy = load_link_policy(tx, plan.mailbox);
      Committed out;
      for (const auto& outcome : ingest_messages(tx, *items, policy))
        if (!outcome.duplicate) ++out.stored;
      tx.exec_params(kCursorUpdate, plan.mailbox, plan.folder, static_cast<std::int64_t>(plan.uidvalidity),
                     static_cast<std::int64_t>(plan.last_uid));
      if (plan.action != "leave" && !plan.uids.empty()) {
        std::vector<std::int64_t> uids(plan.uids.begin(), plan.uids.end());
        out.action_id = tx.exec_params1(kPendingActionInsert, plan.mailbox, plan.folder, static_cast<std::int64_t>(plan.uidvalidity),
                                        sql_id_array(uids), plan.action, plan.move_folder)[0]
                            .as<std::int64_t>();
      }
      if (!plan.actions_done.empty()) tx.exec_params(kPendingActionsDelete, sql_id_array(plan.actions_done));
      tx.commit();
      return out;
    });
    try {
      const auto done = co_await std::move(op);
      commit->stored = done.stored;
      commit->action_id = done.action_id;
    } catch (...) {
      commit->error = std::current_exception();
    }
    commit->done = true;
    commit->done_timer.cancel();
  }

  // Waits for a batch's commit; then (only then) acknowledges it to the server. The action's
  // pending row is removed by the next transaction (`actions_done`).
  awaitable<void> finish(imap::Client& client, const MailboxConfig& cfg, const std::string& move_target, BatchCommit& commit,
                         std::vector<std::int64_t>& actions_done) {
    while (!commit.done) co_await commit.done_timer.async_wait(asio::as_tuple(asio::use_awaitable));
    if (commit.error) std::rethrow_exception(commit.error);
    spdlog::info("event=mailbox_batch mailbox={} fetched={} stored={} last_uid={}", cfg.id, commit.uids.size(), commit.stored,
                 commit.last_uid);
    co_await apply_action(client, cfg.after_import, commit.uids, move_target);
    if (commit.action_id) actions_done.push_back(*commit.action_id);
  }

  static awaitable<void> apply_action(imap::Client& client, const std::string& action, const std::vector<std::uint32_t>& uids,
                                      const std::string& move_target) {
    if (action == "seen") co_await client.mark_seen(uids);
    if (action == "move") co_await client.move(uids, move_target);
    if (action == "delete") co_await client.remove(uids);
  }

  awaitable<void> forget_actions(const std::vector<std::int64_t>& ids) {
    if (ids.empty()) co_return;
    auto op = store_transact(s.store, [ids](pqxx::work& tx) { tx.exec_params(kPendingActionsDelete, sql_id_array(ids)); });
    co_await std::move(op);
  }

  // After-import actions that were committed but not done (the daemon died, or the connection
  // dropped, in between) are done now, before anything new is fetched. An action on another
  // folder or UIDVALIDITY, or one the server refuses (say, a move target that is gone), is
  // dropped with a log line: it cannot succeed later either, and must not hold the mailbox up.
  awaitable<void> replay_actions(imap::Client& client, const MailboxConfig& cfg, const std::string& folder, std::uint32_t uidvalidity,
                                 const std::vector<FolderInfo>& folders, const std::map<std::string, std::string>& wire_of) {
    struct Pending {
      std::int64_t id = 0;
      std::string folder;
      std::uint32_t uidvalidity = 0;
      std::vector<std::uint32_t> uids;
      std::string action, move_folder;
    };
    const auto id = cfg.id;
    auto load = store_transact(s.store, [id](pqxx::work& tx) {
      std::vector<Pending> out;
      for (const auto& r : tx.exec_params(kPendingActionsOf, id)) {
        Pending p;
        p.id = r[0].as<std::int64_t>();
        p.folder = r[1].as<std::string>();
        p.uidvalidity = static_cast<std::uint32_t>(r[2].as<std::int64_t>());
        for (const auto& u : sql_text_list(r[3])) p.uids.push_back(static_cast<std::uint32_t>(std::stoul(u)));
        p.action = r[4].as<std::string>();
        p.move_folder = r[5].as<std::string>();
        out.push_back(std::move(p));
      }
      return out;
    });
    const auto pending = co_await std::move(load);
    std::vector<std::int64_t> done;
    for (const auto& p : pending) {
      std::string why_not;
      std::string target;
      if (p.folder != folder || p.uidvalidity != uidvalidity) {
        why_not = "the folder or its UIDVALIDITY changed";
      } else if (p.action == "move") {
        const auto t = choose_folder(folders, p.move_folder);
        if (t) target = wire_of.at(*t);
        else why_not = "folder '" + p.move_folder + "' does not exist";
      }
      if (why_not.empty()) {
        std::optional<imap::Error> refused;
        try {
          co_await apply_action(client, p.action, p.uids, target);
        } catch (const imap::Error& e) {
          if (e.kind != imap::Error::Kind::refused) throw;  // the connection: try again on the next one
          refused = e;
        }
        if (refused) why_not = refused->what();
      }
      if (why_not.empty())
        spdlog::info("event=mailbox_action_replayed mailbox={} action={} uids={}", id, p.action, p.uids.size());
      else
        spdlog::warn("event=mailbox_action_dropped mailbox={} action={} uids={} reason=\"{}\"", id, p.action, p.uids.size(), why_not);
      done.push_back(p.id);
    }
    co_await forget_actions(done);
  }

  awaitable<void> fetch_new(imap::Client& client, const MailboxConfig& cfg, const std::string& folder, std::uint32_t uidvalidity,
                            const std::string& move_target, bool& synced) {
    const auto id = cfg.id;
    auto cursor_op = store_transact(s.store, [id, folder](pqxx::work& tx) -> std::optional<SyncCursor> {
      auto r = tx.exec_params("SELECT uidvalidity, last_uid FROM imap_cursors WHERE mailbox_id = $1 AND folder = $2", id, folder);
      if (r.empty()) return std::nullopt;
      return SyncCursor{r[0][0].as<std::uint32_t>(), r[0][1].as<std::uint32_t>()};
    });
    const auto start = plan_sync(co_await std::move(cursor_op), uidvalidity);
    if (start.resync) spdlog::info("event=mailbox_resync mailbox={} uidvalidity={}", id, uidvalidity);
    const auto uids = co_await client.search_uids(start.first_uid);
    // Three stages overlap: batch n commits (insert, cursor: on a store thread) while batch n+1 is
    // fetched over IMAP, each of its messages parsed on the parse pool as soon as it is in. Batch
    // n's after-import action waits for its commit.
    const auto executor = co_await asio::this_coro::executor;  // this mailbox's strand
    std::shared_ptr<BatchCommit> pending;
    std::vector<std::int64_t> actions_done;
    for (const auto& uid_batch : batch_uids(uids, static_cast<std::size_t>(s.config.imap.batch_size))) {
      auto batch = std::make_shared<Batch>();
      const std::function<void(imap::FetchedMessage&&)> keep = [this, batch](imap::FetchedMessage&& m) {
        auto arrived = std::make_shared<Arrived>();
        arrived->uid = m.uid;
        arrived->raw = std::move(m.raw);
        std::packaged_task<void()> parse([arrived] { arrived->parsed = parse_message(arrived->raw, arrived->spans); });
        arrived->ready = parse.get_future();
        asio::post(parse_pool, std::move(parse));
        batch->push_back(std::move(arrived));
      };
      co_await client.fetch(uid_batch.front(), uid_batch.back(), keep);  // named: see store/run.hpp on GCC 12
      if (pending) {
        co_await finish(client, cfg, move_target, *pending, actions_done);
        synced = true;
      }
      CommitPlan plan;
      plan.mailbox = id;
      plan.folder = folder;
      plan.uidvalidity = uidvalidity;
      plan.resync = start.resync;
      plan.last_uid = uid_batch.back();
      plan.action = cfg.after_import;
      plan.move_folder = cfg.move_folder;
      plan.actions_done = std::exchange(actions_done, {});
      pending = start_commit(executor, std::move(plan), batch);
    }
    if (pending) {
      co_await finish(client, cfg, move_target, *pending, actions_done);
      synced = true;
    }
    const auto last_done = std::exchange(actions_done, {});
    co_await forget_actions(last_done);
    if (uids.empty()) {
      auto touch = store_transact(s.store, [id](pqxx::work& tx) { tx.exec_params("UPDATE mailboxes SET last_sync_at = now() WHERE id = $1", id); });
      co_await std::move(touch);
    }
  }
};

MailboxSupervisor::MailboxSupervisor(asio::io_context& io, Services& services) : impl_(std::make_shared<Impl>(io, services)) {}

MailboxSupervisor::~MailboxSupervisor() { stop(); }

void MailboxSupervisor::start() { asio::co_spawn(impl_->watch_timer.get_executor(), impl_->watch(), asio::detached); }

void MailboxSupervisor::stop() {
  impl_->stopping = true;
  std::lock_guard lock(impl_->mutex);
  for (auto& [id, client] : impl_->running)
    if (client) asio::post(impl_->io, [client] { client->close(); });
  asio::post(impl_->watch_timer.get_executor(), [impl = impl_] { impl->watch_timer.cancel(); });
}

void MailboxSupervisor::wake() {
  asio::post(impl_->watch_timer.get_executor(), [impl = impl_] {
    impl->rescan = true;
    impl->watch_timer.cancel();
  });
}

}  // namespace mailgate
