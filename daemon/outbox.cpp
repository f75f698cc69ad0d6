#include "daemon/outbox.hpp"

#include <unistd.h>

#include <deque>
#include <map>
#include <set>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <pqxx/pqxx>
#include <spdlog/spdlog.h>

#include "protocol/compose.hpp"
#include "protocol/mime.hpp"
#include "protocol/smtp_client.hpp"
#include "store/outbox.hpp"
#include "store/run.hpp"
#include "util/crypto.hpp"

namespace mailgate {

namespace asio = boost::asio;
using asio::awaitable;
using asio::use_awaitable;

namespace {

// How a mailbox sends, read fresh for every connection (an admin's change applies to the next one).
struct SendSettings {
  std::int64_t id = 0;
  bool exists = false, active = false;
  std::string type, address, display_name, host, security, username, password;
  std::uint16_t port = 587;
  int max_connections = 2, max_per_connection = 20, max_per_minute = 60;
};

SendSettings load_settings(pqxx::dbtransaction& tx, const SecretBox& secrets, std::int64_t id) {
  SendSettings s;
  s.id = id;
  auto r = tx.exec_params(
      "SELECT active, outgoing_type, address, display_name, coalesce(smtp_host, ''), coalesce(smtp_security, 'starttls'), "
      "coalesce(smtp_username, address), smtp_password, coalesce(smtp_port, CASE coalesce(smtp_security, 'starttls') "
      "WHEN 'tls' THEN 465 WHEN 'plain' THEN 25 ELSE 587 END), send_max_connections, send_max_per_connection, send_max_per_minute "
      "FROM mailboxes WHERE id = $1",
      id);
  if (r.empty()) return s;
  const auto& row = r[0];
  s.exists = true;
  s.active = row[0].as<bool>();
  s.type = row[1].as<std::string>();
  s.address = row[2].as<std::string>();
  s.display_name = row[3].as<std::string>();
  s.host = row[4].as<std::string>();
  s.security = row[5].as<std::string>();
  s.username = row[6].as<std::string>();
  if (!row[7].is_null()) s.password = secrets.open(pqxx::binarystring(row[7]).str());
  s.port = static_cast<std::uint16_t>(row[8].as<int>());
  s.max_connections = row[9].as<int>();
  s.max_per_connection = row[10].as<int>();
  s.max_per_minute = row[11].as<int>();
  return s;
}

std::string helo_name(const Config& config) {
  if (!config.outbox.helo_name.empty()) return config.outbox.helo_name;
  char name[256] = {};
  if (gethostname(name, sizeof name - 1) != 0 || !name[0]) return "localhost";
  return name;
}

smtp::Account account_of(const SendSettings& s, const Config& config) {
  smtp::Account a;
  a.endpoint = net::Endpoint{s.host, s.port, s.security, config.tls.ca_file.string()};
  a.helo_name = helo_name(config);
  a.username = s.password.empty() ? std::string() : s.username;
  a.password = s.password;
  return a;
}

smtp::Timeouts timeouts_of(const Config& config) {
  const auto command = std::chrono::duration_cast<std::chrono::milliseconds>(config.outbox.command_timeout);
  return smtp::Timeouts{std::min<std::chrono::milliseconds>(command, std::chrono::seconds(30)), command, command * 2};
}

constexpr std::size_t kPrepareRows = 20;
constexpr std::size_t kPrepareBytes = 16 << 20;

// Loads a claimed row and composes it unless it was composed before (then those bytes are kept).
struct Prepared {
  OutboxRow row;
  std::string raw;
  std::optional<std::string> compose_error;
};

Prepared prepare(pqxx::dbtransaction& tx, std::int64_t id) {
  Prepared p;
  p.row = outbox_load(tx, id);
  if (p.row.raw) {
    p.raw = *p.row.raw;
    return p;
  }
  try {
    p.raw = compose_message(p.row.message);
    outbox_set_raw(tx, id, p.raw);
  } catch (const ComposeError& e) {
    p.compose_error = e.what();
  }
  return p;
}

// Gives claimed rows back untried (shutdown, or the connection broke before their turn).
void release(pqxx::dbtransaction& tx, const std::vector<std::int64_t>& ids) {
  if (ids.empty()) return;
  std::string list = "{";
  for (std::size_t i = 0; i < ids.size(); ++i) list += (i ? "," : "") + std::to_string(ids[i]);
  list += "}";
  tx.exec_params(
      "UPDATE outbox SET state = CASE WHEN attempts <= 1 THEN 'queued' ELSE 'retrying' END, attempts = greatest(attempts - 1, 0), "
      "lease_until = NULL, next_attempt_at = now(), updated_at = now() WHERE id = ANY($1::bigint[]) AND state = 'sending'",
      list);
}

}  // namespace

struct OutboxWorker::Impl : std::enable_shared_from_this<OutboxWorker::Impl> {
  Impl(asio::io_context& io, Services& s) : s(s), strand(asio::make_strand(io)), timer(strand) {}

  Services& s;
  asio::strand<asio::io_context::executor_type> strand;
  asio::steady_timer timer;
  std::atomic<bool> stopping{false};
  // Strand-only state.
  std::map<std::int64_t, int> connections;                                     // open per mailbox
  std::map<std::int64_t, std::deque<std::chrono::steady_clock::time_point>> sends;  // per mailbox, the last minute
  std::set<std::shared_ptr<smtp::Client>> clients;

  awaitable<void> loop() {
    auto self = shared_from_this();
    while (!stopping) {
      std::optional<std::string> failure;
      try {
        co_await dispatch();
      } catch (const std::exception& e) {
        failure = e.what();
      }
      if (failure) spdlog::warn("event=outbox_dispatch_failed reason=\"{}\"", *failure);
      timer.expires_after(s.config.outbox.poll);
      co_await timer.async_wait(asio::as_tuple(use_awaitable));
    }
  }

  awaitable<void> dispatch() {
    auto op = store_transact(s.store, [](pqxx::work& tx) {
      const int recovered = outbox_recover(tx);
      return std::make_pair(recovered, outbox_due(tx));
    });
    const auto [recovered, due] = co_await std::move(op);
    if (recovered) spdlog::warn("event=outbox_recovered rows={} reason=\"lease passed: the sender stopped before recording\"", recovered);
    for (const auto& d : due) {
      if (stopping) break;
      const auto id = d.mailbox_id;
      auto load = store_transact(s.store, [&secrets = s.secrets, id](pqxx::work& tx) { return load_settings(tx, secrets, id); });
      auto settings = std::make_shared<const SendSettings>(co_await std::move(load));
      if (!settings->exists || !settings->active) {
        co_await fail_all(id, settings->exists ? "the sending mailbox is inactive" : "the sending mailbox does not exist");
        continue;
      }
      if (settings->type != "smtp") continue;  // Mailgun and Microsoft Graph transports: issue 7
      int& open = connections[id];
      const int needed = (d.due + settings->max_per_connection - 1) / settings->max_per_connection;
      for (int i = 0; open < settings->max_connections && i < needed; ++i) {
        ++open;
        auto self = shared_from_this();
        asio::co_spawn(strand, connection(settings), [self, id](std::exception_ptr e) {
          if (e) {
            try {
              std::rethrow_exception(e);
            } catch (const std::exception& x) {
              spdlog::error("event=outbox_connection_crashed mailbox={} reason=\"{}\"", id, x.what());
            }
          }
          asio::post(self->strand, [self, id] {
            --self->connections[id];
            self->timer.cancel();  // look again now: more rows may be waiting for a connection
          });
        });
      }
    }
  }

  awaitable<void> fail_all(std::int64_t mailbox, const std::string& reason) {
    auto op = store_transact(s.store, [mailbox, reason, &c = s.config](pqxx::work& tx) {
      auto ids = outbox_claim(tx, mailbox, 1000, c.outbox.lease);
      for (auto id : ids) outbox_mark_failed(tx, id, true, "connect", reason, c.outbox.retry_base, c.outbox.max_age);
      return ids.size();
    });
    const auto n = co_await std::move(op);
    if (n) spdlog::warn("event=outbox_failed mailbox={} rows={} reason=\"{}\"", mailbox, n, reason);
  }

  // Waits until the mailbox may send one more message within its per-minute limit, and counts it.
  awaitable<void> take_rate(std::int64_t mailbox, int per_minute) {
    for (;;) {
      auto& window = sends[mailbox];
      const auto now = std::chrono::steady_clock::now();
      while (!window.empty() && now - window.front() >= std::chrono::minutes(1)) window.pop_front();
      if (static_cast<int>(window.size()) < per_minute) {
        window.push_back(now);
        co_return;
      }
      asio::steady_timer wait(strand);
      wait.expires_at(window.front() + std::chrono::minutes(1));
      co_await wait.async_wait(asio::as_tuple(use_awaitable));
      if (stopping) co_return;
    }
  }

  awaitable<void> connection(std::shared_ptr<const SendSettings> settings) {
    auto self = shared_from_this();
    const auto mailbox = settings->id;
    const auto lease = s.config.outbox.lease;
    const int limit = settings->max_per_connection;
    auto claim = store_transact(s.store, [mailbox, limit, lease](pqxx::work& tx) { return outbox_claim(tx, mailbox, limit, lease); });
    const std::vector<std::int64_t> ids = co_await std::move(claim);
    if (ids.empty()) co_return;

    auto client = std::make_shared<smtp::Client>(strand, account_of(*settings, s.config), timeouts_of(s.config));
    clients.insert(client);
    std::optional<smtp::Failure> open_failure;
    try {
      co_await client->open();
    } catch (const smtp::Failure& f) {
      open_failure = f;
    }
    if (open_failure) {
      spdlog::warn("event=outbox_connect_failed mailbox={} step={} permanent={} reason=\"{}\"", mailbox, smtp::to_string(open_failure->step),
                   open_failure->permanent, open_failure->what());
      const bool permanent = open_failure->permanent;
      const std::string step = smtp::to_string(open_failure->step), reason = open_failure->what();
      auto record = store_transact(s.store, [ids, permanent, step, reason, &c = s.config](pqxx::work& tx) {
        for (auto id : ids) outbox_mark_failed(tx, id, permanent, step, reason, c.outbox.retry_base, c.outbox.max_age);
      });
      co_await std::move(record);
      clients.erase(client);
      co_return;
    }

    std::size_t next = 0;
    std::deque<std::shared_ptr<Prepared>> ready;  // prepared rows not yet sent
    auto renewed = std::chrono::steady_clock::now();
    for (; next < ids.size() && !stopping && client->usable(); ++next) {
      const auto id = ids[next];
      if (ready.empty()) {
        // One transaction prepares the next few rows (at most kPrepareRows or about kPrepareBytes)
        // and, when a third of the lease has passed, renews the lease of every row still to go.
        const std::vector<std::int64_t> remaining(ids.begin() + static_cast<std::ptrdiff_t>(next), ids.end());
        const bool renew = std::chrono::steady_clock::now() - renewed > lease / 3;  // the claim set the first lease
        auto load = store_transact(s.store, [remaining, lease, renew](pqxx::work& tx) {
          if (renew) outbox_extend(tx, remaining, lease);
          std::vector<std::shared_ptr<Prepared>> out;
          std::size_t bytes = 0;
          for (std::size_t i = 0; i < remaining.size() && i < kPrepareRows && bytes < kPrepareBytes; ++i) {
            out.push_back(std::make_shared<Prepared>(prepare(tx, remaining[i])));
            bytes += out.back()->raw.size();
          }
          return out;
        });
        auto chunk = co_await std::move(load);
        for (auto& p : chunk) ready.push_back(std::move(p));
        if (renew) renewed = std::chrono::steady_clock::now();
      } else if (std::chrono::steady_clock::now() - renewed > lease / 3) {  // a slow server: keep the lease alive
        const std::vector<std::int64_t> remaining(ids.begin() + static_cast<std::ptrdiff_t>(next), ids.end());
        auto extend = store_transact(s.store, [remaining, lease](pqxx::work& tx) { outbox_extend(tx, remaining, lease); });
        co_await std::move(extend);
        renewed = std::chrono::steady_clock::now();
      }
      auto prepared = ready.front();
      ready.pop_front();
      co_await take_rate(mailbox, settings->max_per_minute);
      if (stopping) break;
      if (prepared->compose_error) {
        const std::string reason = *prepared->compose_error;
        auto record = store_transact(s.store, [id, reason, &c = s.config](pqxx::work& tx) {
          outbox_mark_failed(tx, id, true, "compose", reason, c.outbox.retry_base, c.outbox.max_age);
        });
        co_await std::move(record);
        continue;
      }
      smtp::Envelope envelope;
      envelope.from = prepared->row.message.from.address;
      envelope.to = prepared->row.recipients();
      std::optional<smtp::SendResult> result;
      std::optional<smtp::Failure> failure;
      try {
        result = co_await client->send(envelope, prepared->raw);
      } catch (const smtp::Failure& f) {
        failure = f;
      }
      if (result) {
        std::vector<RefusedRecipient> refused;
        for (const auto& r : result->refused) refused.push_back({r.address, r.reply.text()});
        auto record = store_transact(s.store, [id, refused, prepared](pqxx::work& tx) {
          outbox_mark_sent(tx, id, refused, parse_message(prepared->raw));
        });
        co_await std::move(record);
        spdlog::info("event=outbox_sent id={} mailbox={} recipients={} refused={} reply=\"{}\"", id, mailbox, envelope.to.size(),
                     refused.size(), result->reply.text());
      } else {
        const bool permanent = failure->permanent;
        const std::string step = smtp::to_string(failure->step), reason = failure->what();
        auto record = store_transact(s.store, [id, permanent, step, reason, &c = s.config](pqxx::work& tx) {
          outbox_mark_failed(tx, id, permanent, step, reason, c.outbox.retry_base, c.outbox.max_age);
        });
        co_await std::move(record);
        spdlog::warn("event=outbox_send_failed id={} mailbox={} step={} permanent={} reason=\"{}\"", id, mailbox, step, permanent, reason);
      }
    }
    if (next < ids.size()) {  // not tried on this connection: back to the queue, due now
      const std::vector<std::int64_t> untried(ids.begin() + static_cast<std::ptrdiff_t>(next), ids.end());
      auto give_back = store_transact(s.store, [untried](pqxx::work& tx) { release(tx, untried); });
      co_await std::move(give_back);
    }
    co_await client->quit();
    clients.erase(client);
  }
};

OutboxWorker::OutboxWorker(asio::io_context& io, Services& services) : impl_(std::make_shared<Impl>(io, services)) {}

OutboxWorker::~OutboxWorker() { stop(); }

void OutboxWorker::start() { asio::co_spawn(impl_->strand, impl_->loop(), asio::detached); }

void OutboxWorker::stop() {
  impl_->stopping = true;
  asio::post(impl_->strand, [impl = impl_] {
    impl->timer.cancel();
    for (const auto& c : impl->clients) c->close();
  });
}

void OutboxWorker::wake() {
  asio::post(impl_->strand, [impl = impl_] { impl->timer.cancel(); });
}

awaitable<MailboxTestResult> test_mailbox_sending(Services& s, std::int64_t mailbox_id) {
  auto load = store_transact(s.store, [&secrets = s.secrets, mailbox_id](pqxx::work& tx) { return load_settings(tx, secrets, mailbox_id); });
  const SendSettings settings = co_await std::move(load);
  MailboxTestResult out;
  if (settings.type != "smtp") {
    out.step = "connect";
    out.reply = "this mailbox sends through " + settings.type + ", not SMTP";
    co_return out;
  }
  OutgoingMessage m;
  m.from = {settings.display_name, settings.address};
  m.to = {{settings.display_name, settings.address}};
  m.subject = "mailgate: test message";
  m.text_body = "This message was sent by mailgate to test the outgoing settings of this mailbox.\r\n";
  m.message_id = random_token(18) + "@" + settings.address.substr(settings.address.find('@') + 1);
  m.date = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  m.extra_headers = {{"Auto-Submitted", "auto-generated"}};
  const std::string raw = compose_message(m);
  const auto executor = co_await asio::this_coro::executor;
  smtp::Client client(executor, account_of(settings, s.config), timeouts_of(s.config));
  smtp::Envelope envelope;
  envelope.from = settings.address;
  envelope.to = {settings.address};
  std::optional<smtp::Failure> failure;
  try {
    co_await client.open();
    auto result = co_await client.send(envelope, raw);
    out.ok = true;
    out.reply = result.reply.text();
  } catch (const smtp::Failure& f) {
    failure = f;
  }
  if (failure) {
    out.step = smtp::to_string(failure->step);
    out.reply = failure->what();
  }
  co_await client.quit();
  co_return out;
}

}  // namespace mailgate
