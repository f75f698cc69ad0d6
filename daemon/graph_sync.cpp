#include "daemon/graph_sync.hpp"

#include <algorithm>
#include <map>
#include <mutex>
#include <random>
#include <set>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <pqxx/pqxx>
#include <spdlog/spdlog.h>

#include "daemon/graph_slots.hpp"
#include "daemon/graph_tokens.hpp"
#include "daemon/mailbox_health.hpp"
#include "protocol/http_client.hpp"
#include "protocol/mime.hpp"
#include "rules/mailbox_sync.hpp"
#include "store/audit.hpp"
#include "store/ingest.hpp"
#include "store/run.hpp"
#include "store/sql.hpp"
#include "util/crypto.hpp"

namespace mailgate {

namespace asio = boost::asio;
namespace json = boost::json;
using asio::awaitable;
using Clock = std::chrono::steady_clock;

namespace {

constexpr auto kRecheck = std::chrono::seconds(2);  // how often a waiting loop reads its mailbox again (a failed one: for a save or reconnect)
constexpr int kMaxThrottled = 8;  // throttled answers in a row before a poll gives up (retrying)

constexpr const char* kStateOf = "SELECT user_id, link, round_complete FROM graph_sync_state WHERE mailbox_id = $1";
// The page's cursor; the mailbox's last sync time with it.
constexpr const char* kStateUpdate =
    "WITH state AS (INSERT INTO graph_sync_state (mailbox_id, user_id, link, round_complete, rounds) "
    "VALUES ($1, $2, $3, $4, CASE WHEN $4 THEN 1 ELSE 0 END) ON CONFLICT (mailbox_id) DO UPDATE SET user_id = $2, link = $3, "
    "round_complete = $4, rounds = graph_sync_state.rounds + CASE WHEN $4 THEN 1 ELSE 0 END, updated_at = now()) "
    "UPDATE mailboxes SET last_sync_at = now() WHERE id = $1";
// One lookup per id in messages_source_key (store/ingest.cpp's kFindBySource says why it is fenced).
constexpr const char* kStoredKeys =
    "SELECT k.source_key FROM unnest($2::text[]) AS k(source_key) CROSS JOIN LATERAL (SELECT 1 FROM messages m "
    "WHERE coalesce(m.mailbox_id, 0) = $1 AND m.source = 'ms365' AND m.source_key = k.source_key OFFSET 0) s";
constexpr const char* kExpiryWarned =
    "INSERT INTO graph_sync_state (mailbox_id, expiry_warned_for) VALUES ($1, $2::date) ON CONFLICT (mailbox_id) "
    "DO UPDATE SET expiry_warned_for = $2::date WHERE graph_sync_state.expiry_warned_for IS DISTINCT FROM $2::date "
    "RETURNING mailbox_id";

struct Ms365Config {
  std::int64_t id = 0;
  bool active = false;
  std::string tenant, client_id, secret, user, health, updated_at, expires_on;
  std::optional<int> days_left;  // until ms365_secret_expires_on
  std::chrono::seconds poll{60};
};

Ms365Config load_config(pqxx::dbtransaction& tx, const SecretBox& secrets, std::int64_t id) {
  Ms365Config c;
  auto r = tx.exec_params(
      "SELECT active AND incoming_type = 'ms365', coalesce(ms365_tenant_id, ''), coalesce(ms365_client_id, ''), ms365_client_secret, "
      "coalesce(nullif(ms365_user_id, ''), address), health, updated_at::text, poll_interval_seconds, "
      "coalesce(to_char(ms365_secret_expires_on, 'YYYY-MM-DD'), ''), ms365_secret_expires_on - current_date "
      "FROM mailboxes WHERE id = $1",
      id);
  if (r.empty()) return c;
  const auto& row = r[0];
  c.id = id;
  c.tenant = row[1].as<std::string>();
  c.client_id = row[2].as<std::string>();
  c.active = row[0].as<bool>() && !row[3].is_null() && !c.tenant.empty() && !c.client_id.empty();
  if (!row[3].is_null()) c.secret = secrets.open(pqxx::binarystring(row[3]).str());
  c.user = row[4].as<std::string>();
  c.health = row[5].as<std::string>();
  c.updated_at = row[6].as<std::string>();
  c.poll = std::chrono::seconds(row[7].as<int>());
  c.expires_on = row[8].as<std::string>();
  if (!row[9].is_null()) c.days_left = row[9].as<int>();
  return c;
}

// A Graph call that failed: Graph's own words, and whether trying again can help.
class GraphError : public std::runtime_error {
 public:
  GraphError(const std::string& what, bool permanent, std::chrono::seconds wait = {})
      : std::runtime_error(what), permanent(permanent), wait(wait) {}
  bool permanent;
  std::chrono::seconds wait;  // at least this long before the next try (Retry-After)
};

GraphError graph_error(const http::Response& r, const std::string& doing) {
  std::string code, message;
  boost::system::error_code ec;
  auto body = json::parse(r.body, ec);
  if (!ec && body.is_object())
    if (const auto* e = body.as_object().if_contains("error"); e && e->is_object()) {
      if (const auto* c = e->as_object().if_contains("code"); c && c->is_string()) code = c->as_string();
      if (const auto* m = e->as_object().if_contains("message"); m && m->is_string()) message = m->as_string();
    }
  if (message.size() > 300) message = message.substr(0, 300) + "...";
  std::string what = "Graph " + doing + ": HTTP " + std::to_string(r.status);
  if (!code.empty()) what += " " + code;
  if (!message.empty()) what += ": " + message;
  // 400 (bad request), 401 (after a fresh token), 403 (no Mail.Read permission), 404 (no such
  // user or folder): the configuration is wrong and asking again will not help.
  const bool permanent = r.status == 400 || r.status == 401 || r.status == 403 || r.status == 404;
  return GraphError(what, permanent);
}

// One page of a delta round.
struct DeltaPage {
  std::vector<std::string> ids;  // messages listed (removed ones left out)
  std::string next_link, delta_link;
};

DeltaPage parse_delta_page(const std::string& body) {
  boost::system::error_code ec;
  auto v = json::parse(body, ec);
  if (ec || !v.is_object()) throw GraphError("Graph delta: the answer is not a JSON object", false);
  const auto& o = v.as_object();
  DeltaPage page;
  if (const auto* items = o.if_contains("value"); items && items->is_array())
    for (const auto& item : items->as_array()) {
      if (!item.is_object() || item.as_object().contains("@removed")) continue;
      const auto* id = item.as_object().if_contains("id");
      if (id && id->is_string() && !id->as_string().empty()) page.ids.emplace_back(id->as_string());
    }
  if (const auto* l = o.if_contains("@odata.nextLink"); l && l->is_string()) page.next_link = l->as_string();
  if (const auto* l = o.if_contains("@odata.deltaLink"); l && l->is_string()) page.delta_link = l->as_string();
  if (page.next_link.empty() && page.delta_link.empty())
    throw GraphError("Graph delta: a page with neither @odata.nextLink nor @odata.deltaLink", false);
  return page;
}

// The bearer token goes only to the configured Graph host.
bool same_origin(const std::string& link, const std::string& base) {
  try {
    const auto a = http::parse_url(link), b = http::parse_url(base);
    return a.scheme == b.scheme && a.host == b.host && a.port == b.port;
  } catch (const std::exception&) {
    return false;
  }
}

}  // namespace

struct GraphSupervisor::Impl : std::enable_shared_from_this<GraphSupervisor::Impl> {
  Impl(asio::io_context& io, Services& s)
      : io(io), s(s), watch_timer(asio::make_strand(io)), client(io.get_executor(), http::client_options(s.config)) {}

  asio::io_context& io;
  Services& s;
  asio::steady_timer watch_timer;
  http::Client client;
  std::atomic<bool> stopping{false};
  bool rescan = false;  // on the watch strand: a wake() came while the watch was not waiting
  std::mutex mutex;
  std::set<std::int64_t> running;
  std::mt19937_64 random{std::random_device{}()};

  // What one mailbox's concurrent requests share (all on the mailbox's strand).
  struct Run {
    Ms365Config cfg;
    GraphCredentials credentials;
    Clock::time_point not_before{};  // throttled: no request of this mailbox before this
  };

  double jitter() {
    std::lock_guard lock(mutex);
    return std::uniform_real_distribution<double>(0.0, 1.0)(random);
  }

  static awaitable<void> sleep(Clock::duration d) {
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
          for (const auto& r : tx.exec("SELECT id FROM mailboxes WHERE active AND incoming_type = 'ms365' AND ms365_client_secret IS NOT NULL"))
            ids.push_back(r[0].as<std::int64_t>());
          return ids;
        });
        auto ids = co_await std::move(op);
        for (auto id : ids) {
          std::lock_guard lock(mutex);
          if (!running.insert(id).second) continue;
          asio::co_spawn(asio::make_strand(io), mailbox_loop(id), [self, id](std::exception_ptr e) {
            if (e) {
              try {
                std::rethrow_exception(e);
              } catch (const std::exception& x) {
                spdlog::error("event=graph_loop_crashed mailbox={} reason=\"{}\"", id, x.what());
              }
            }
            std::lock_guard lock(self->mutex);
            self->running.erase(id);  // the watch starts it again
          });
        }
      } catch (const std::exception& e) {
        spdlog::warn("event=graph_watch_failed reason=\"{}\"", e.what());
      }
      if (rescan) continue;
      watch_timer.expires_after(s.config.daemon.mailbox_watch);
      co_await watch_timer.async_wait(asio::as_tuple(asio::use_awaitable));
    }
  }

  awaitable<Ms365Config> config_of(std::int64_t id) {
    auto op = store_transact(s.store, [&secrets = s.secrets, id](pqxx::work& tx) { return load_config(tx, secrets, id); });
    co_return co_await std::move(op);
  }

  // Writes the health after a failure; a store that is down too only gets logged.
  awaitable<void> record_health(std::int64_t id, Health h, const std::string& reason) {
    std::optional<std::string> failure;
    try {
      auto op = store_transact(s.store, [id, h, reason](pqxx::work& tx) { mailbox_set_health(tx, id, h, reason, "graph sync"); });
      co_await std::move(op);
    } catch (const std::exception& e) {
      failure = e.what();
    }
    if (failure) spdlog::warn("event=mailbox_health_write_failed mailbox={} reason=\"{}\"", id, *failure);
  }

  // Logged once per daemon run, audited once per expiry date.
  awaitable<void> warn_expiry(const Ms365Config& cfg, std::string& warned) {
    if (!cfg.days_left || *cfg.days_left > s.config.graph.secret_expiry_warning_days || warned == cfg.expires_on) co_return;
    warned = cfg.expires_on;
    spdlog::warn("event=ms365_secret_expiring mailbox={} expires_on={} days_left={}", cfg.id, cfg.expires_on, *cfg.days_left);
    const auto id = cfg.id;
    const auto date = cfg.expires_on;
    const int days = *cfg.days_left;
    auto op = store_transact(s.store, [id, date, days](pqxx::work& tx) {
      if (tx.exec_params(kExpiryWarned, id, date).empty()) return;
      const std::string what = days < 0 ? "expired" : "expires in " + std::to_string(days) + " days";
      audit_write(tx, Actor{"daemon", std::nullopt, "graph sync"}, "mailbox", std::to_string(id), "ms365_secret_expiring",
                  {{"ms365_secret_expires_on", std::nullopt, date + " (" + what + ")"}});
    });
    co_await std::move(op);
  }

  awaitable<void> mailbox_loop(std::int64_t id) {
    auto self = shared_from_this();
    int attempt = 0;
    auto failing_since = Clock::now();
    std::string warned;
    while (!stopping) {
      Ms365Config cfg;
      bool loaded = false;
      try {
        cfg = co_await config_of(id);
        loaded = true;
      } catch (const std::exception& e) {
        spdlog::warn("event=graph_config_failed mailbox={} reason=\"{}\"", id, e.what());
      }
      if (!loaded) {  // (no co_await inside a catch block: C++20)
        co_await sleep(kRecheck);
        continue;
      }
      if (!cfg.active) break;
      if (cfg.health == "failed") {  // an admin's save or reconnect sets it back to ok
        co_await sleep(kRecheck);
        continue;
      }
      std::optional<std::string> store_error;
      try {
        co_await warn_expiry(cfg, warned);
      } catch (const std::exception& e) {
        store_error = e.what();
      }
      std::optional<GraphError> failure;
      auto run = std::make_shared<Run>();
      run->cfg = cfg;
      run->credentials.tenant = cfg.tenant;
      run->credentials.client_id = cfg.client_id;
      run->credentials.client_secret = cfg.secret;
      if (!store_error) {
        try {
          co_await poll(run);
        } catch (const GraphError& e) {
          failure = e;
        } catch (const oauth2::Error& e) {
          failure = GraphError(std::string("token: ") + e.what(), e.permanent);
        } catch (const http::Error& e) {
          failure = GraphError(std::string("Graph: ") + http::to_string(e.kind) + ": " + e.what(), false);
        } catch (const std::exception& e) {  // the store: unreachable, timed out
          store_error = e.what();
        }
      }
      if (stopping) break;  // a poll cut short by the shutdown is no failure of the mailbox
      if (failure) {
        if (attempt == 0) failing_since = Clock::now();
        const auto failing_for = std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - failing_since);
        auto d = on_sync_failure(failure->permanent, attempt, failing_for, s.config.imap.give_up_after, jitter());
        const auto wait = std::max<Clock::duration>(d.retry_in, failure->wait);
        spdlog::warn("event=graph_sync_failed mailbox={} attempt={} health={} retry_ms={} reason=\"{}\"", id, attempt,
                     to_string(d.health), std::chrono::duration_cast<std::chrono::milliseconds>(wait).count(), failure->what());
        ++attempt;
        const std::string reason = failure->what();  // named: see store/run.hpp on GCC 12 and co_await
        co_await record_health(id, d.health, reason);
        if (d.health == Health::retrying) co_await sleep(wait);
      } else if (store_error) {
        spdlog::warn("event=graph_sync_store_failed mailbox={} reason=\"{}\"", id, *store_error);
        co_await sleep(backoff(attempt++, jitter()));
      } else {
        attempt = 0;
        co_await wait_for_poll(cfg);
      }
    }
    std::lock_guard lock(mutex);
    running.erase(id);
  }

  // Until the next poll is due, or sooner when an admin changed the mailbox.
  awaitable<void> wait_for_poll(const Ms365Config& cfg) {
    const auto due = Clock::now() + cfg.poll;
    while (!stopping && Clock::now() < due) {
      co_await sleep(std::min<Clock::duration>(kRecheck, due - Clock::now()));
      std::optional<Ms365Config> now_cfg;
      try {
        now_cfg = co_await config_of(cfg.id);
      } catch (const std::exception&) {
      }
      if (now_cfg && (now_cfg->updated_at != cfg.updated_at || !now_cfg->active || now_cfg->health == "failed")) co_return;
    }
  }

  std::string initial_link(const Ms365Config& cfg) const {
    std::string base = s.config.graph.api_base;
    while (!base.empty() && base.back() == '/') base.pop_back();
    // changeType=created: updates (read flags, categories) of messages already listed are noise here.
    return base + "/users/" + http::url_encode(cfg.user) + "/mailFolders('inbox')/messages/delta?changeType=created&$select=id";
  }

  // One request with the mailbox's token, waiting out throttling (never before Retry-After) and
  // asking for a new token once after a 401.
  awaitable<http::Response> call(const std::shared_ptr<Run>& run, const std::string& url, const char* doing) {
    bool fresh_token = false;
    int throttled = 0;
    const std::string prefer = "odata.maxpagesize=" + std::to_string(s.config.graph.page_size) + ", IdType=\"ImmutableId\"";
    for (;;) {
      if (stopping) throw GraphError("stopping", false);
      while (Clock::now() < run->not_before) co_await sleep(run->not_before - Clock::now());
      auto token_op = s.graph_tokens->token(run->credentials);
      const std::string token = co_await std::move(token_op);
      http::Request request;
      request.method = "GET";
      request.url = url;
      request.headers.push_back({"Authorization", "Bearer " + token});
      request.headers.push_back({"Prefer", prefer});
      request.headers.push_back({"Accept", "application/json"});
      // In flight within the mailbox's share of Graph, counted with its sendMail requests.
      auto take = GraphSlots::acquire(s.graph_slots, run->cfg.id);
      std::optional<GraphSlots::Slot> slot = co_await std::move(take);
      auto send_op = client.send(std::move(request));
      auto response = co_await std::move(send_op);
      slot.reset();
      if (response.status == 401 && !fresh_token) {
        s.graph_tokens->invalidate(run->credentials);
        fresh_token = true;
        continue;
      }
      if (response.status == 429 || response.status == 503) {
        const auto retry_after = response.retry_after();
        const auto wait = retry_after ? *retry_after : std::chrono::seconds(1 << std::min(throttled, 6));
        run->not_before = std::max(run->not_before, Clock::now() + wait);
        spdlog::info("event=graph_throttled mailbox={} status={} retry_after_s={} doing={}", run->cfg.id, response.status,
                     wait.count(), doing);
        if (++throttled >= kMaxThrottled) {
          auto e = graph_error(response, doing);
          throw GraphError(e.what(), false, wait);
        }
        continue;
      }
      co_return response;
    }
  }

  // The raw MIME of `ids`, at most [graph] max_concurrent_per_mailbox requests at once. A message
  // deleted since it was listed (404) comes back empty and is skipped.
  struct Fetch {
    explicit Fetch(asio::any_io_executor ex) : done(ex) {}
    std::vector<std::string> ids;
    std::vector<std::optional<std::string>> raws;
    std::size_t next = 0;
    int workers = 0;
    std::exception_ptr error;
    asio::steady_timer done;
  };

  awaitable<void> fetch_worker(std::shared_ptr<Run> run, std::shared_ptr<Fetch> f) {
    auto self = shared_from_this();
    std::string base = s.config.graph.api_base;
    while (!base.empty() && base.back() == '/') base.pop_back();
    while (!f->error && f->next < f->ids.size()) {
      const auto i = f->next++;
      const std::string url = base + "/users/" + http::url_encode(run->cfg.user) + "/messages/" + http::url_encode(f->ids[i]) + "/$value";
      auto response = co_await call(run, url, "$value");
      if (response.status == 200) f->raws[i] = std::move(response.body);
      else if (response.status != 404) throw graph_error(response, "$value");
    }
  }

  awaitable<std::vector<std::optional<std::string>>> fetch_all(const std::shared_ptr<Run>& run, const std::vector<std::string>& ids) {
    const auto executor = co_await asio::this_coro::executor;  // the mailbox's strand
    auto f = std::make_shared<Fetch>(executor);
    f->ids = ids;
    f->raws.resize(f->ids.size());
    f->done.expires_at(Clock::time_point::max());
    f->workers = static_cast<int>(std::min<std::size_t>(std::max(1, s.config.graph.max_concurrent_per_mailbox), f->ids.size()));
    const int workers = f->workers;
    for (int w = 0; w < workers; ++w)
      asio::co_spawn(executor, fetch_worker(run, f), [f](std::exception_ptr e) {
        if (e && !f->error) f->error = e;
        if (--f->workers == 0) f->done.cancel();
      });
    while (f->workers > 0) co_await f->done.async_wait(asio::as_tuple(asio::use_awaitable));
    if (f->error) std::rethrow_exception(f->error);
    co_return std::move(f->raws);
  }

  // One poll: a delta round from the stored link to the next deltaLink, committing page by page.
  awaitable<void> poll(const std::shared_ptr<Run>& run) {
    const auto id = run->cfg.id;
    auto state_op = store_transact(s.store, [id](pqxx::work& tx) {
      std::optional<std::pair<std::string, std::string>> out;  // user, link
      auto r = tx.exec_params(kStateOf, id);
      if (!r.empty() && !r[0][0].is_null() && !r[0][1].is_null()) out.emplace(r[0][0].as<std::string>(), r[0][1].as<std::string>());
      return out;
    });
    const auto state = co_await std::move(state_op);
    const std::string api_base = s.config.graph.api_base;
    std::string link = initial_link(run->cfg);
    bool from_start = true;
    if (state && state->first == run->cfg.user && same_origin(state->second, api_base)) {
      link = state->second;
      from_start = false;
    }
    int pages = 0, listed_total = 0, stored_total = 0;
    while (!stopping) {
      auto response = co_await call(run, link, "delta");
      if (response.status == 410 && !from_start) {  // the sync state expired: a full round again (dedupe keeps it safe)
        spdlog::info("event=graph_delta_reset mailbox={} reason=\"{}\"", id, graph_error(response, "delta").what());
        link = initial_link(run->cfg);
        from_start = true;
        continue;
      }
      if (response.status != 200) throw graph_error(response, "delta");
      auto page = parse_delta_page(response.body);
      const std::string& cursor = page.delta_link.empty() ? page.next_link : page.delta_link;
      if (!same_origin(cursor, api_base))
        throw GraphError("Graph delta: a link to another host than [graph] api_base: refused", false);
      // What is stored already (an earlier round that was cut short, a reset) is not fetched again.
      auto ids = page.ids;
      auto known_op = store_transact(s.store, [id, ids](pqxx::work& tx) {
        std::set<std::string> known;
        if (!ids.empty())
          for (const auto& r : tx.exec_params(kStoredKeys, id, sql_text_array(ids))) known.insert(r[0].as<std::string>());
        return known;
      });
      const auto known = co_await std::move(known_op);
      std::vector<std::string> wanted;
      std::set<std::string> seen;
      for (const auto& m : page.ids)
        if (!known.count(m) && seen.insert(m).second) wanted.push_back(m);
      std::vector<std::optional<std::string>> raws;
      if (!wanted.empty()) raws = co_await fetch_all(run, wanted);
      const bool complete = !page.delta_link.empty();
      const int stored = co_await commit_page(id, run->cfg.user, wanted, raws, cursor, complete);
      ++pages;
      listed_total += static_cast<int>(page.ids.size());
      stored_total += stored;
      spdlog::debug("event=graph_page mailbox={} listed={} fetched={} stored={} complete={}", id, page.ids.size(), wanted.size(),
                    stored, complete);
      if (complete) break;
      link = page.next_link;
      from_start = false;
    }
    if (stored_total > 0 || pages > 1)
      spdlog::info("event=graph_round mailbox={} pages={} listed={} stored={}", id, pages, listed_total, stored_total);
  }

  // The page's messages and the cursor, in one transaction; the mailbox is healthy again.
  struct PageItems {
    std::vector<IngestItem> items;
    bool parsed = false;
  };

  awaitable<int> commit_page(std::int64_t id, const std::string& user, const std::vector<std::string>& ids,
                             std::vector<std::optional<std::string>>& raws, const std::string& cursor, bool complete) {
    auto page = std::make_shared<PageItems>();
    auto& items = page->items;
    for (std::size_t i = 0; i < ids.size(); ++i) {
      if (!raws[i]) continue;
      IngestItem item;
      item.in.mailbox_id = id;
      item.in.source = "ms365";
      item.in.source_key = ids[i];
      item.in.raw = std::move(*raws[i]);
      item.in.transport_tls = true;
      items.push_back(std::move(item));
    }
    auto op = store_run(s.store, [id, user, cursor, complete, page](pqxx::connection_base& c) {
      // Parsed here, on a store thread (not the I/O threads), once: a job that meets a broken
      // connection runs again (store/store.hpp).
      if (!page->parsed) {
        for (auto& item : page->items) {
          std::vector<std::optional<ContentSpan>> spans;
          item.parsed = parse_message(item.in.raw, spans);
          for (const auto& span : spans) {
            std::optional<RawSpan> kept;
            if (span) kept = RawSpan{static_cast<std::int64_t>(span->offset), static_cast<std::int64_t>(span->length), span->base64 ? "base64" : "identity"};
            item.attachment_spans.push_back(std::move(kept));
          }
        }
        page->parsed = true;
      }
      pqxx::work tx(c);
      int stored = 0;
      if (!page->items.empty()) {
        const LinkPolicy policy = load_link_policy(tx, id);
        for (const auto& outcome : ingest_messages(tx, page->items, policy))
          if (!outcome.duplicate) ++stored;
      }
      tx.exec_params(kStateUpdate, id, user, cursor, complete);
      mailbox_set_health(tx, id, Health::ok, "", "graph sync");
      tx.commit();
      return stored;
    });
    co_return co_await std::move(op);
  }
};

GraphSupervisor::GraphSupervisor(asio::io_context& io, Services& services) : impl_(std::make_shared<Impl>(io, services)) {}

GraphSupervisor::~GraphSupervisor() { stop(); }

void GraphSupervisor::start() { asio::co_spawn(impl_->watch_timer.get_executor(), impl_->watch(), asio::detached); }

void GraphSupervisor::stop() {
  impl_->stopping = true;
  asio::post(impl_->watch_timer.get_executor(), [impl = impl_] {
    impl->watch_timer.cancel();
    impl->client.close_all();
  });
}

void GraphSupervisor::wake() {
  asio::post(impl_->watch_timer.get_executor(), [impl = impl_] {
    impl->rescan = true;
    impl->watch_timer.cancel();
  });
}

}  // namespace mailgate
