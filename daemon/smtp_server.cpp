// daemon/smtp_server: see the header for the behaviour. Layout: the listener (accept loops and
// session counts), one coroutine per session driving smtpd::Session over a net::Connection, the
// worker pool for parsing and sender authentication, and the group commit.
#include "daemon/smtp_server.hpp"

#include <algorithm>
#include <atomic>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <set>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/serialize.hpp>
#include <pqxx/pqxx>
#include <spdlog/spdlog.h>

#include "daemon/metrics.hpp"
#include "daemon/services.hpp"
#include "protocol/connection.hpp"
#include "protocol/mime.hpp"
#include "protocol/sender_auth.hpp"
#include "protocol/smtp_session.hpp"
#include "rules/address.hpp"
#include "store/receivers.hpp"
#include "store/run.hpp"
#include "util/crypto.hpp"

namespace mailgate {

namespace asio = boost::asio;
namespace ssl = asio::ssl;
namespace json = boost::json;
using asio::awaitable;
using asio::use_awaitable;
using tcp = asio::ip::tcp;

namespace {

constexpr auto kRcptCacheTtl = std::chrono::seconds(5);
constexpr std::size_t kRcptCacheSize = 10000;

// Runs `job` on the worker pool and resumes the coroutine on its own executor (a strand).
template <class F, class R = std::invoke_result_t<F&>>
awaitable<R> on_pool(asio::thread_pool& pool, F job) {
  auto result = std::make_shared<detail::RunResult<R>>();
  auto waiter = std::make_shared<detail::RunWaiter>(co_await asio::this_coro::executor);
  waiter->timer.expires_at(std::chrono::steady_clock::time_point::max());
  asio::post(pool, [result, job = std::move(job), weak = std::weak_ptr<detail::RunWaiter>(waiter)]() mutable {
    try {
      result->value.emplace(job());
    } catch (...) {
      result->error = std::current_exception();
    }
    if (auto w = weak.lock()) {
      auto ex = w->timer.get_executor();
      asio::post(ex, [w = std::move(w)] {
        w->done = true;
        w->timer.cancel();
      });
    }
  });
  co_await waiter->timer.async_wait(asio::as_tuple(use_awaitable));
  if (result->error) std::rethrow_exception(result->error);
  co_return std::move(*result->value);
}

std::string header_value(const std::string& raw, std::string_view name) {
  // The first field of that name in the header section (unfolded), "" when absent.
  const auto end = raw.find("\r\n\r\n");
  const std::string_view head(raw.data(), end == std::string::npos ? raw.size() : end + 2);
  std::size_t pos = 0;
  while (pos < head.size()) {
    auto eol = head.find("\r\n", pos);
    if (eol == std::string_view::npos) eol = head.size();
    const auto line = head.substr(pos, eol - pos);
    if (line.size() > name.size() && line[name.size()] == ':' && strncasecmp(line.data(), name.data(), name.size()) == 0) {
      std::string value(line.substr(name.size() + 1));
      for (auto next = eol + 2; next < head.size() && (head[next] == ' ' || head[next] == '\t');) {
        auto e = head.find("\r\n", next);
        if (e == std::string_view::npos) e = head.size();
        value += head.substr(next, e - next);
        next = e + 2;
      }
      return trim(value);
    }
    pos = eol + 2;
  }
  return {};
}

std::string rfc5322_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S +0000", &tm);
  return buf;
}

json::object verdict_json(const auth::Verdict& v) {
  json::array dkim;
  for (const auto& d : v.dkim) dkim.emplace_back(json::object{{"result", d.result}, {"domain", d.domain}, {"selector", d.selector}});
  return {{"spf", v.spf},
          {"spf_domain", v.spf_domain},
          {"dkim", std::move(dkim)},
          {"dmarc", v.dmarc},
          {"dmarc_policy", v.dmarc_policy},
          {"header_from", v.header_from},
          {"spf_aligned", v.spf_aligned},
          {"dkim_aligned", v.dkim_aligned},
          {"from_authenticated", v.from_authenticated}};
}

// What the worker pool makes of a message at the end of DATA.
struct Prepared {
  Delivery delivery;
  std::vector<std::string> auth_notes;
};

// Deliveries of every session, committed together: see the header.
class GroupCommit {
 public:
  GroupCommit(asio::io_context& io, Store& store, int rejections_per_hour, int parallel)
      : strand_(asio::make_strand(io)), store_(store), rejections_per_hour_(rejections_per_hour), parallel_(parallel) {}

  awaitable<DeliveryOutcome> deliver(Delivery d) {
    auto p = std::make_shared<Pending>(co_await asio::this_coro::executor);
    p->delivery = std::move(d);
    p->waiter->timer.expires_after(2 * (store_.config().query_timeout + store_.config().connect_timeout));
    asio::post(strand_, [this, p] {
      queue_.push_back(p);
      if (running_ < parallel_) {
        ++running_;
        asio::co_spawn(strand_, drain(), asio::detached);
      }
    });
    co_await p->waiter->timer.async_wait(asio::as_tuple(use_awaitable));
    if (!p->waiter->done) throw StoreTimeout("the database did not answer in time");
    if (p->error) std::rethrow_exception(p->error);
    co_return std::move(p->outcome);
  }

 private:
  struct Pending {
    explicit Pending(asio::any_io_executor ex) : waiter(std::make_shared<detail::RunWaiter>(ex)) {}
    Delivery delivery;
    DeliveryOutcome outcome;
    std::exception_ptr error;
    std::shared_ptr<detail::RunWaiter> waiter;
  };
  static constexpr std::size_t kMaxBatch = 64;

  awaitable<void> drain() {
    while (!queue_.empty()) {
      std::vector<std::shared_ptr<Pending>> batch;
      while (!queue_.empty() && batch.size() < kMaxBatch) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      // receiver_deliver() may lock its receiver (the TLS latch's row lock, the rejection
      // count's advisory lock): in one order in every batch, so that two batches running at
      // once never wait for each other in a circle.
      std::stable_sort(batch.begin(), batch.end(), [](const auto& a, const auto& b) { return a->delivery.receiver_id < b->delivery.receiver_id; });
      auto job = [batch, limit = rejections_per_hour_](pqxx::connection_base& c) {
        // The whole batch in one go: each receiver loaded once, the messages stored in a fixed
        // number of statements.
        std::string why_not;
        {
          std::vector<const Delivery*> deliveries;
          for (const auto& p : batch) deliveries.push_back(&p->delivery);
          std::optional<std::vector<DeliveryOutcome>> outcomes;
          pqxx::work tx(c);
          try {
            outcomes = receiver_deliver_batch(tx, deliveries, limit);
          } catch (const pqxx::broken_connection&) {
            throw;
          } catch (const std::exception& e) {
            why_not = e.what();
          }
          if (outcomes) {
            tx.commit();
            for (std::size_t i = 0; i < batch.size(); ++i) {
              batch[i]->error = nullptr;
              batch[i]->outcome = std::move((*outcomes)[i]);
            }
            return;
          }
        }
        // The database refused something: again one by one, each delivery under a savepoint, so
        // that the refused one fails alone. The savepoints are plain SQL: a libpqxx 6.4
        // subtransaction whose statements went through exec_params/exec_prepared (not exec)
        // counts as never begun and does not roll back to its savepoint.
        spdlog::warn("event=smtp_batch_one_by_one messages={} reason=\"{}\"", batch.size(), why_not);
        pqxx::work tx(c);
        for (const auto& p : batch) {
          p->error = nullptr;
          tx.exec("SAVEPOINT delivery");
          try {
            p->outcome = receiver_deliver(tx, p->delivery, limit);
            tx.exec("RELEASE SAVEPOINT delivery");
          } catch (const pqxx::broken_connection&) {
            throw;
          } catch (const std::exception&) {
            // This delivery alone failed; the others go on.
            p->error = std::current_exception();
            tx.exec("ROLLBACK TO SAVEPOINT delivery");
          }
        }
        tx.commit();
      };
      std::exception_ptr failed;
      try {
        auto op = store_run(store_, std::move(job));
        co_await std::move(op);
      } catch (...) {
        failed = std::current_exception();
      }
      for (auto& p : batch) {
        if (failed) p->error = failed;
        auto w = p->waiter;
        asio::post(w->timer.get_executor(), [w] {
          w->done = true;
          w->timer.cancel();
        });
      }
    }
    --running_;
  }

  asio::strand<asio::io_context::executor_type> strand_;
  Store& store_;
  int rejections_per_hour_, parallel_;
  std::deque<std::shared_ptr<Pending>> queue_;
  int running_ = 0;
};

}  // namespace

struct SmtpServer::Impl : std::enable_shared_from_this<SmtpServer::Impl> {
  Impl(asio::io_context& io, Services& s)
      : io(io), s(s), cfg(s.config.smtp_receiver), pool(static_cast<std::size_t>(cfg.auth_threads)),
        commit(io, s.store, cfg.rejections_per_hour, cfg.commit_transactions) {
    hostname = cfg.hostname;
    if (hostname.empty()) {
      char buf[256] = {};
      gethostname(buf, sizeof buf - 1);
      hostname = buf;
    }
    settings.hostname = hostname;
    settings.limits.data_line = cfg.max_line_length;
    settings.limits.recipients = cfg.max_recipients;
    settings.limits.message = cfg.max_message_bytes;
  }

  asio::io_context& io;
  Services& s;
  const SmtpReceiverConfig& cfg;
  asio::thread_pool pool;
  GroupCommit commit;
  std::string hostname;
  smtpd::Settings settings;
  std::shared_ptr<ssl::context> tls;
  std::unique_ptr<auth::Checker> checker;
  std::vector<std::unique_ptr<tcp::acceptor>> acceptors;
  std::vector<std::uint16_t> ports;

  std::mutex mutex;  // guards what follows: sessions run on many strands
  int sessions = 0;
  std::map<std::string, int> per_ip;
  // Live sessions, each with "waiting for a command between transactions" (shutdown cancels those).
  std::map<std::shared_ptr<net::Connection>, std::shared_ptr<std::atomic<bool>>> live;
  // Active receivers found by RCPT in the last kRcptCacheTtl, by address match key: a sender's
  // next message does not ask the database again. A receiver deactivated meanwhile is still
  // refused: the delivery's transaction looks at its status again (receiver_deliver).
  std::map<std::string, std::pair<std::int64_t, std::chrono::steady_clock::time_point>> rcpt_cache;
  bool stopping = false;

  void load_tls() {
    if (cfg.tls_certificate.empty()) return;
    auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
    ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                     ssl::context::no_tlsv1_1 | ssl::context::single_dh_use);
    try {
      ctx->use_certificate_chain_file(cfg.tls_certificate.string());
      ctx->use_private_key_file(cfg.tls_key.string(), ssl::context::pem);
    } catch (const std::exception& e) {
      throw std::runtime_error("[smtp_receiver] tls_certificate / tls_key: " + std::string(e.what()));
    }
    tls = std::move(ctx);
    settings.tls_available = true;
  }

  void bind(const std::string& listen) {
    const auto colon = listen.rfind(':');
    std::string host = listen.substr(0, colon);
    if (host.size() > 1 && host.front() == '[') host = host.substr(1, host.size() - 2);
    const auto port = static_cast<std::uint16_t>(std::stoi(listen.substr(colon + 1)));
    boost::system::error_code ec;
    const auto address = asio::ip::make_address(host, ec);
    if (ec) throw std::runtime_error("[smtp_receiver] listen \"" + listen + "\": not an IP address");
    auto acceptor = std::make_unique<tcp::acceptor>(io);
    const tcp::endpoint ep(address, port);
    acceptor->open(ep.protocol(), ec);
    if (!ec) acceptor->set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor->bind(ep, ec);
    if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
    if (ec) throw std::runtime_error("[smtp_receiver] cannot listen on " + listen + ": " + ec.message());
    ports.push_back(acceptor->local_endpoint().port());
    acceptors.push_back(std::move(acceptor));
  }

  awaitable<void> accept_loop(tcp::acceptor& acceptor) {
    auto self = shared_from_this();
    for (;;) {
      auto [ec, socket] = co_await acceptor.async_accept(asio::make_strand(io), asio::as_tuple(use_awaitable));
      if (ec == asio::error::operation_aborted) co_return;
      if (ec) {
        spdlog::warn("event=smtp_accept_failed reason=\"{}\"", ec.message());
        continue;
      }
      // Replies and TLS records go out when written: with Nagle's algorithm a second small write
      // (the TLS 1.3 session tickets after the handshake) waited for the client's delayed ACK.
      socket.set_option(tcp::no_delay(true), ec);
      auto ex = socket.get_executor();
      asio::co_spawn(ex, run_session(std::move(socket)), asio::detached);
    }
  }

  // Counts the session in; "" when admitted, else the 421 to send.
  std::string admit(const std::string& ip) {
    std::lock_guard lock(mutex);
    if (stopping) return "421 4.3.2 " + hostname + " Service shutting down\r\n";
    if (sessions >= cfg.max_sessions) return "421 4.7.0 " + hostname + " Too many connections, try again later\r\n";
    if (per_ip[ip] >= cfg.max_sessions_per_ip) return "421 4.7.0 " + hostname + " Too many connections from your address\r\n";
    ++sessions;
    ++per_ip[ip];
    return {};
  }
  void leave(const std::string& ip) {
    std::lock_guard lock(mutex);
    --sessions;
    if (--per_ip[ip] <= 0) per_ip.erase(ip);
  }

  awaitable<void> run_session(tcp::socket socket) {
    auto self = shared_from_this();
    auto conn = std::make_shared<net::Connection>(std::move(socket), tls);
    const std::string ip = conn->peer_ip();
    const std::string session_id = hex_encode(random_bytes(6));
    const auto write_timeout = std::chrono::duration_cast<std::chrono::milliseconds>(cfg.command_timeout);
    if (auto refusal = admit(ip); !refusal.empty()) {
      try {
        co_await conn->write(refusal, std::chrono::seconds(5));
      } catch (const net::Error&) {
      }
      co_return;
    }
    auto idle = std::make_shared<std::atomic<bool>>(false);
    {
      std::lock_guard lock(mutex);
      live.emplace(conn, idle);
    }
    spdlog::debug("event=smtp_connect session={} client={}", session_id, ip);
    // The slot is given back before the last reply is written: a client that reconnects as soon
    // as it read 221 must not find its old session still counted.
    bool released = false;
    const std::function<void()> release = [&] {
      if (!released) leave(ip);
      released = true;
    };
    try {
      co_await converse(*conn, *idle, ip, session_id, release);
    } catch (const net::Error& e) {
      spdlog::info("event=smtp_session_ended session={} client={} reason=\"{}\"", session_id, ip, e.what());
    } catch (const std::exception& e) {
      spdlog::error("event=smtp_session_failed session={} client={} reason=\"{}\"", session_id, ip, e.what());
    }
    conn->close();
    {
      std::lock_guard lock(mutex);
      live.erase(conn);
    }
    release();
    (void)write_timeout;
  }

  bool shutting_down() {
    std::lock_guard lock(mutex);
    return stopping;
  }

  awaitable<void> converse(net::Connection& conn, std::atomic<bool>& idle, const std::string& ip, const std::string& session_id,
                           const std::function<void()>& release) {
    smtpd::Session session(settings);
    const auto command_timeout = std::chrono::duration_cast<std::chrono::milliseconds>(cfg.command_timeout);
    const auto write_timeout = command_timeout;
    std::optional<std::int64_t> receiver;  // of the current transaction
    std::chrono::steady_clock::time_point data_deadline{};
    const std::string greeting = session.greeting().text;
    const std::string shutting_down_reply = "421 4.3.2 " + hostname + " Service shutting down\r\n";
    co_await conn.write(greeting, write_timeout);
    std::string in;
    for (;;) {
      auto event = session.next();
      if (!event) {
        if (shutting_down() && session.idle()) {
          release();
          co_await conn.write(shutting_down_reply, write_timeout);
          co_return;
        }
        std::chrono::milliseconds timeout = command_timeout;
        if (session.in_data()) {
          if (data_deadline == std::chrono::steady_clock::time_point{}) data_deadline = std::chrono::steady_clock::now() + cfg.data_timeout;
          timeout = std::chrono::duration_cast<std::chrono::milliseconds>(data_deadline - std::chrono::steady_clock::now());
        } else {
          data_deadline = {};
        }
        in.clear();
        bool cancelled = false;
        try {
          if (timeout.count() <= 0) throw net::Error(net::Error::Kind::timeout, "data timeout");
          idle = session.idle();
          co_await conn.read_some(in, timeout);
          idle = false;
        } catch (const net::Error& e) {
          if (e.kind == net::Error::Kind::io && shutting_down() && session.idle()) {
            cancelled = true;  // shutdown() cancelled the wait for the next command
          } else if (e.kind != net::Error::Kind::timeout) {
            throw;
          }
        }
        if (cancelled) {
          release();
          co_await conn.write(shutting_down_reply, write_timeout);
          co_return;
        }
        if (in.empty()) {
          spdlog::info("event=smtp_timeout session={} client={} in_data={}", session_id, ip, session.in_data());
          const std::string timeout_reply = session.timed_out().text;
          release();  // before the 421: a client that reconnects at once must find its slot free
          co_await conn.write(timeout_reply, std::chrono::seconds(5));
          co_return;
        }
        session.feed(in);
        continue;
      }
      switch (event->kind) {
        case smtpd::Event::Kind::reply:
          if (session.idle()) receiver.reset();
          co_await conn.write(event->text, write_timeout);
          break;
        case smtpd::Event::Kind::close:
          release();
          if (!event->text.empty()) co_await conn.write(event->text, write_timeout);
          co_return;
        case smtpd::Event::Kind::start_tls:
          co_await conn.write(event->text, write_timeout);
          co_await conn.start_tls(command_timeout);
          session.tls_started();
          receiver.reset();
          break;
        case smtpd::Event::Kind::check_rcpt: {
          auto verdict = co_await check_rcpt(event->address, receiver);
          session.answer_rcpt(verdict);
          break;
        }
        case smtpd::Event::Kind::message: {
          const auto reply = co_await end_of_data(*event, conn, ip, session_id, *receiver);
          receiver.reset();
          session.answer_message(std::get<0>(reply), std::get<1>(reply), std::get<2>(reply));
          break;
        }
      }
    }
  }

  awaitable<smtpd::RcptVerdict> check_rcpt(const std::string& address, std::optional<std::int64_t>& receiver) {
    auto normalized = normalize_email(address);
    if (!std::holds_alternative<std::string>(normalized)) co_return smtpd::RcptVerdict::unknown;
    const std::string key = email_match_key(std::get<std::string>(normalized));
    std::optional<std::int64_t> found;
    const auto now = std::chrono::steady_clock::now();
    {
      std::lock_guard lock(mutex);
      if (auto c = rcpt_cache.find(key); c != rcpt_cache.end() && now - c->second.second < kRcptCacheTtl) found = c->second.first;
    }
    if (!found) {
      try {
        auto op = store_transact(s.store, [key](pqxx::work& tx) -> std::optional<std::int64_t> {
          auto r = receiver_find(tx, key);
          if (!r || r->status != "active") return std::nullopt;
          return r->id;
        });
        found = co_await std::move(op);
      } catch (const std::exception& e) {
        spdlog::warn("event=smtp_rcpt_deferred reason=\"{}\"", e.what());
        co_return smtpd::RcptVerdict::defer;
      }
      if (found) {
        std::lock_guard lock(mutex);
        if (rcpt_cache.size() >= kRcptCacheSize) rcpt_cache.clear();
        rcpt_cache[key] = {*found, now};
      }
    }
    if (!found) co_return smtpd::RcptVerdict::unknown;
    if (receiver && *receiver != *found) co_return smtpd::RcptVerdict::later;
    receiver = found;
    co_return smtpd::RcptVerdict::accept;
  }

  awaitable<std::tuple<int, std::string, std::string>> end_of_data(const smtpd::Event& event, net::Connection& conn,
                                                                    const std::string& ip, const std::string& session_id,
                                                                    std::int64_t receiver_id) {
    using Reply = std::tuple<int, std::string, std::string>;
    const std::string queue_id = hex_encode(random_bytes(10));
    auth::Input input;
    input.client_ip = ip;
    input.helo = event.envelope.helo;
    input.mail_from = event.envelope.from;
    input.raw = event.data;
    input.authserv_id = hostname;
    const bool tls = event.envelope.tls;
    const std::string recipient = event.envelope.to.empty() ? "" : event.envelope.to.front();
    const std::string helo = event.envelope.helo;
    auto prepare = [this, input = std::move(input), queue_id, tls, recipient, helo, receiver_id, peer = conn.peer()]() {
      Prepared p;
      const auto verdict = checker->check(input);
      Delivery& d = p.delivery;
      d.receiver_id = receiver_id;
      d.queue_id = queue_id;
      d.envelope_from = input.mail_from;
      d.peer_address = peer;
      d.tls = tls;
      d.authentication_results = verdict.authentication_results;
      d.auth_json = json::serialize(verdict_json(verdict));
      // Our trace fields go on top of the message as received (RFC 5321 4.4, RFC 8601).
      const std::string trace = "Authentication-Results: " + verdict.authentication_results + "\r\n" + "Received: from " + helo +
                                " ([" + input.client_ip + "])\r\n\tby " + hostname + " (mailgate) with " +
                                (tls ? "ESMTPS" : "ESMTP") + " id " + queue_id + "\r\n\tfor <" + recipient + ">; " + rfc5322_now() +
                                "\r\n";
      d.raw = trace + input.raw;
      d.parsed = parse_message(d.raw);
      d.facts.header_from = verdict.header_from;
      d.facts.from_authenticated = verdict.from_authenticated;
      d.facts.tls = tls;
      d.facts.size = input.raw.size();
      for (const auto& a : d.parsed.attachments)
        if (!a.inline_part || !a.filename.empty()) d.facts.attachments.push_back({a.content_type, a.filename});
      d.precedence = header_value(input.raw, "Precedence");
      d.list_headers = !header_value(input.raw, "List-Id").empty() || !header_value(input.raw, "List-Unsubscribe").empty();
      p.auth_notes = verdict.notes;
      return p;
    };
    auto prep_op = on_pool(pool, std::move(prepare));
    Prepared prepared = co_await std::move(prep_op);
    const std::string from = prepared.delivery.facts.header_from;
    DeliveryOutcome outcome;
    try {
      auto op = commit.deliver(std::move(prepared.delivery));
      outcome = co_await std::move(op);
    } catch (const std::exception& e) {
      spdlog::warn("event=smtp_deferred session={} client={} queue_id={} reason=\"{}\"", session_id, ip, queue_id, e.what());
      s.metrics.count("mailgate_smtp_messages_total", "Messages at the end of DATA, by outcome.", "outcome", "deferred");
      co_return Reply{451, "4.3.0", "Temporary failure, try again later (id " + queue_id + ")"};
    }
    const auto& v = outcome.verdict;
    const char* result = outcome.receiver_gone                                            ? "unknown"
                         : v.action == ReceiverVerdict::Action::accept                    ? "accepted"
                         : v.action == ReceiverVerdict::Action::reject_not_whitelisted ? "not_whitelisted"
                                                                                          : "rejected";
    spdlog::info("event=smtp_message session={} client={} queue_id={} receiver={} from=\"{}\" tls={} result={} message={} "
                 "rejection_mail={} reason=\"{}\"",
                 session_id, ip, queue_id, receiver_id, from, tls, result, outcome.message_id,
                 outcome.rejection_queued ? "queued" : outcome.rejection_skipped.empty() ? "none" : outcome.rejection_skipped, v.reason);
    s.metrics.count("mailgate_smtp_messages_total", "Messages at the end of DATA, by outcome.", "outcome", result);
    if ((outcome.rejection_queued || outcome.notifications_queued) && s.outbox_wake) s.outbox_wake();
    if (v.action == ReceiverVerdict::Action::accept) {
      co_return Reply{250, "2.0.0", "Ok: queued as " + queue_id};
    }
    co_return Reply{v.code, v.enhanced, v.reason};
  }
};

SmtpServer::SmtpServer(asio::io_context& io, Services& services) : impl_(std::make_shared<Impl>(io, services)) {}

SmtpServer::~SmtpServer() { impl_->pool.join(); }

bool SmtpServer::enabled() const { return !impl_->cfg.listen.empty(); }

void SmtpServer::start() {
  auto& impl = *impl_;
  if (!enabled()) return;
  impl.load_tls();
  auth::DnsSettings dns;
  dns.servers = impl.cfg.dns_servers;
  dns.timeout = impl.cfg.dns_timeout;
  dns.cache_entries = impl.cfg.dns_cache_entries;
  impl.checker = std::make_unique<auth::Checker>(dns);
  for (const auto& l : impl.cfg.listen) impl.bind(l);
  for (auto& a : impl.acceptors) asio::co_spawn(impl.io, impl.accept_loop(*a), asio::detached);
}

awaitable<void> SmtpServer::shutdown(std::chrono::seconds grace) {
  auto impl = impl_;
  {
    std::lock_guard lock(impl->mutex);
    impl->stopping = true;
  }
  for (auto& a : impl->acceptors) {
    boost::system::error_code ec;
    a->close(ec);
  }
  asio::steady_timer timer(co_await asio::this_coro::executor);
  const auto until = std::chrono::steady_clock::now() + grace;
  for (;;) {
    std::map<std::shared_ptr<net::Connection>, std::shared_ptr<std::atomic<bool>>> live;
    {
      std::lock_guard lock(impl->mutex);
      live = impl->live;
    }
    if (live.empty()) break;
    if (std::chrono::steady_clock::now() >= until) {
      for (auto& [c, idle] : live) c->close();
      break;
    }
    for (auto& [c, idle] : live)
      if (*idle) c->cancel();  // waiting for a command: stop waiting and answer 421
    timer.expires_after(std::chrono::milliseconds(50));
    co_await timer.async_wait(asio::as_tuple(use_awaitable));
  }
}

std::vector<std::uint16_t> SmtpServer::ports() const { return impl_->ports; }

}  // namespace mailgate
