#include "daemon/outbox.hpp"

#include <algorithm>
#include <deque>
#include <exception>
#include <map>
#include <optional>
#include <set>
#include <utility>
#include <vector>

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

#include "daemon/graph_tokens.hpp"
#include "daemon/outbox_transports.hpp"
#include "protocol/compose.hpp"
#include "protocol/http_client.hpp"
#include "protocol/mime.hpp"
#include "store/outbox.hpp"
#include "store/run.hpp"
#include "util/crypto.hpp"

namespace mailgate {

namespace asio = boost::asio;
using asio::awaitable;
using asio::use_awaitable;

namespace {

// One row of a chunk, composed and claimed: what the transport sends.
struct Ready {
  std::int64_t id = 0;
  std::string from;              // the envelope
  std::vector<std::string> to;
  std::vector<std::string> bcc;  // those of `to` in no header (Graph needs them named)
  std::string raw;
  std::shared_ptr<const ComposedMessage> parse;  // of raw (its `raw` left empty); null: parsed when recorded
};

TransportEnvelope transport_envelope(const Ready& row) {
  TransportEnvelope e;
  e.from = row.from;
  e.to = row.to;
  e.bcc = row.bcc;
  return e;
}

// A chunk taken for sending (outbox_lock_due, composed here, outbox_start_sending: one
// transaction), and the rows that could not be composed, failed in that same transaction.
struct Chunk {
  std::vector<Ready> rows;
  std::vector<std::pair<std::int64_t, std::string>> compose_failed;  // id, reason
  std::chrono::steady_clock::time_point claimed_at;  // no later than the start of the leases
};

Chunk take_chunk(pqxx::work& tx, std::int64_t mailbox, int limit, std::chrono::seconds lease, const Config& config) {
  Chunk chunk;
  chunk.claimed_at = std::chrono::steady_clock::now();
  // The claim's commit does not wait for its WAL to reach the disk: the sender waits for the claim,
  // and a claim lost with PostgreSQL (its rows back to due) loses nothing. Whatever was sent on it
  // had its outcome unrecorded too (the outcome's commit waits for the disk, and with it for every
  // commit before it), so those messages are sent again: the documented window, no wider.
  tx.exec("SET LOCAL synchronous_commit = off");
  auto rows = outbox_lock_due(tx, mailbox, limit, outbox_chunk_bytes);
  for (auto& row : rows) {
    Ready r;
    r.id = row.id;
    r.from = row.message.from.address;
    r.to = row.recipients();
    r.bcc = row.bcc;
    if (row.raw) {  // composed and kept by an earlier version: those bytes
      r.raw = std::move(*row.raw);
    } else {  // every attempt composes the same bytes (protocol/compose)
      try {
        ComposedMessage composed = compose_and_parse(row.message);
        r.raw = std::move(composed.raw);
        composed.raw.clear();
        r.parse = std::make_shared<const ComposedMessage>(std::move(composed));
      } catch (const ComposeError& e) {
        chunk.compose_failed.emplace_back(row.id, e.what());
        continue;
      }
    }
    chunk.rows.push_back(std::move(r));
  }
  std::vector<std::int64_t> ids;
  for (const auto& r : chunk.rows) ids.push_back(r.id);
  for (const auto& [id, reason] : chunk.compose_failed) ids.push_back(id);
  outbox_start_sending(tx, ids, lease);
  for (const auto& [id, reason] : chunk.compose_failed)
    outbox_mark_failed(tx, id, true, "compose", reason, config.outbox.retry_base, config.outbox.max_age);
  return chunk;
}

// What a chunk came to on the wire, for outbox_record().
struct SentRow {
  std::int64_t id = 0;
  std::string raw;
  std::shared_ptr<const ComposedMessage> parse;  // as Ready's
  std::vector<RefusedRecipient> refused;
  std::size_t recipients = 0;
  std::string reply;
};
struct ChunkOutcomes {
  std::vector<SentRow> sent;
  std::vector<OutboxFailed> failed;
  std::vector<std::int64_t> untried;
  bool empty() const { return sent.empty() && failed.empty() && untried.empty(); }
};

// A store job started now and awaited later: the connection sends on meanwhile.
template <class R>
struct Pending {
  explicit Pending(const asio::any_io_executor& ex) : timer(ex) { timer.expires_at(asio::steady_timer::time_point::max()); }
  asio::steady_timer timer;
  bool done = false;
  std::exception_ptr error;
  R value{};
};

// Where a session at its messages-per-connection limit leaves the next one (OutboxWorker::Impl::
// connection): its first chunk and the mailbox's settings, both being read, and the last chunk's
// outcomes, committing.
struct SessionEnd {
  std::shared_ptr<Pending<Chunk>> successor;
  std::shared_ptr<Pending<SendSettings>> settings;
  std::shared_ptr<Pending<std::size_t>> recording;
};

}  // namespace

struct OutboxWorker::Impl : std::enable_shared_from_this<OutboxWorker::Impl> {
  Impl(asio::io_context& io, Services& s)
      : s(s), strand(asio::make_strand(io)), timer(strand), http(strand, http::client_options(s.config)),
        own_tokens(s.graph_tokens ? nullptr : std::make_unique<GraphTokens>(strand, s.config)),
        deps{s.config, http, graph_token_source(s.graph_tokens ? *s.graph_tokens : *own_tokens), s.graph_slots} {}

  Services& s;
  asio::strand<asio::io_context::executor_type> strand;
  asio::steady_timer timer;
  std::atomic<bool> stopping{false};
  http::Client http;   // Mailgun and Graph: kept-alive connections shared by the mailboxes
  // Graph access tokens: the daemon's one source (Services), or one of its own when there is none.
  std::unique_ptr<GraphTokens> own_tokens;
  TransportDeps deps;
  // Strand-only state.
  std::map<std::int64_t, int> connections;                                     // open per mailbox
  std::map<std::int64_t, std::deque<std::chrono::steady_clock::time_point>> sends;  // per mailbox, the last minute
  std::map<std::int64_t, std::chrono::steady_clock::time_point> throttled;     // per mailbox: told to wait (Retry-After) until
  std::set<std::shared_ptr<Transport>> transports;

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
      auto load = store_transact(s.store, [&secrets = s.secrets, id](pqxx::work& tx) { return load_send_settings(tx, secrets, id); });
      auto settings = std::make_shared<const SendSettings>(co_await std::move(load));
      if (!settings->exists || !settings->active) {
        co_await fail_all(id, settings->exists ? "the sending mailbox is inactive" : "the sending mailbox does not exist");
        continue;
      }
      if (auto t = throttled.find(id); t != throttled.end()) {  // the provider said to wait (Retry-After)
        if (std::chrono::steady_clock::now() < t->second) continue;
        throttled.erase(t);
      }
      // Connections already open count: rows still being claimed by one are due until the claim
      // commits, and a look at the queue meanwhile (another wake) must not open one more for them
      // (it would log in, find nothing and say QUIT).
      int& open = connections[id];
      const int needed = (d.due + settings->max_per_connection - 1) / settings->max_per_connection;
      const int max_connections = transport_max_connections(*settings, s.config);
      while (open < std::min(max_connections, needed)) {
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

  // The per-minute window of a mailbox, counted across its connections.
  std::deque<std::chrono::steady_clock::time_point>& rate_window(std::int64_t mailbox) {
    auto& window = sends[mailbox];
    const auto now = std::chrono::steady_clock::now();
    while (!window.empty() && now - window.front() >= std::chrono::minutes(1)) window.pop_front();
    return window;
  }
  int rate_room(std::int64_t mailbox, int per_minute) { return per_minute - static_cast<int>(rate_window(mailbox).size()); }
  // Counts one message and returns nothing when the mailbox may send it now; else how long to wait.
  std::optional<std::chrono::steady_clock::duration> rate_take(std::int64_t mailbox, int per_minute) {
    auto& window = rate_window(mailbox);
    const auto now = std::chrono::steady_clock::now();
    if (static_cast<int>(window.size()) < per_minute) {
      window.push_back(now);
      return std::nullopt;
    }
    return window.front() + std::chrono::minutes(1) - now;
  }

  template <class R>
  std::shared_ptr<Pending<R>> start(awaitable<R> op) {
    auto pending = std::make_shared<Pending<R>>(strand);
    auto self = shared_from_this();
    asio::co_spawn(strand, std::move(op), [self, pending](std::exception_ptr e, R value) mutable {
      asio::post(self->strand, [pending, e, value = std::move(value)]() mutable {
        pending->error = e;
        pending->value = std::move(value);
        pending->done = true;
        pending->timer.cancel();
      });
    });
    return pending;
  }

  template <class R>
  awaitable<R> finish(std::shared_ptr<Pending<R>> pending) {
    while (!pending->done) co_await pending->timer.async_wait(asio::as_tuple(use_awaitable));
    if (pending->error) std::rethrow_exception(pending->error);
    co_return std::move(pending->value);
  }

  awaitable<Chunk> prepare_chunk(std::int64_t mailbox, int limit) {
    auto op = store_transact(s.store, [mailbox, limit, lease = s.config.outbox.lease, &c = s.config](pqxx::work& tx) {
      return take_chunk(tx, mailbox, limit, lease, c);
    });
    Chunk chunk = co_await std::move(op);
    for (const auto& [id, reason] : chunk.compose_failed)
      spdlog::warn("event=outbox_send_failed id={} mailbox={} step=compose permanent=true reason=\"{}\"", id, mailbox, reason);
    co_return chunk;
  }

  // Commits a chunk's outcomes in one transaction (the sent copies parsed before it opens), then
  // logs the rows it recorded as sent.
  awaitable<std::size_t> record_chunk(std::int64_t mailbox, std::shared_ptr<const ChunkOutcomes> outcomes) {
    auto op = store_run(s.store, [outcomes, &c = s.config](pqxx::connection_base& connection) {
      OutboxOutcomes o;
      std::vector<ParsedMessage> reparsed;  // the parses of bytes kept by an earlier version
      reparsed.reserve(outcomes->sent.size());  // o points into it: never reallocated
      for (const auto& sent : outcomes->sent) {
        OutboxSent copy;
        copy.id = sent.id;
        copy.raw = &sent.raw;
        std::vector<std::optional<ContentSpan>> parsed_spans;
        if (sent.parse) {  // composed here: parsed then (protocol/compose)
          copy.parsed = &sent.parse->parsed;
        } else {
          copy.parsed = &reparsed.emplace_back(parse_message(sent.raw, parsed_spans));
        }
        const auto& spans = sent.parse ? sent.parse->spans : parsed_spans;
        for (const auto& span : spans)
          copy.attachment_spans.push_back(span ? std::optional<RawSpan>(RawSpan{static_cast<std::int64_t>(span->offset),
                                                                                static_cast<std::int64_t>(span->length),
                                                                                span->base64 ? "base64" : "identity"})
                                               : std::nullopt);
        copy.refused = sent.refused;
        o.sent.push_back(std::move(copy));
      }
      o.failed = outcomes->failed;
      o.untried = outcomes->untried;
      pqxx::work tx(connection);
      auto recorded = outbox_record(tx, o, c.outbox.retry_base, c.outbox.max_age);
      tx.commit();
      return recorded;
    });
    const std::vector<OutboxSentCopy> recorded = co_await std::move(op);
    std::set<std::int64_t> ids;
    for (const auto& r : recorded) ids.insert(r.outbox_id);
    for (const auto& sent : outcomes->sent) {
      if (ids.count(sent.id)) {
        spdlog::info("event=outbox_sent id={} mailbox={} recipients={} refused={} reply=\"{}\"", sent.id, mailbox, sent.recipients,
                     sent.refused.size(), sent.reply);
      } else {
        spdlog::warn("event=outbox_sent_not_recorded id={} mailbox={} reason=\"the row was no longer ours (lease passed or cancelled)\"",
                     sent.id, mailbox);
      }
    }
    co_return recorded.size();
  }

  // Waits for a chunk's commit; returns why it failed, if it did.
  awaitable<std::optional<std::string>> settle(std::shared_ptr<Pending<std::size_t>> recording) {
    std::optional<std::string> failure;
    try {
      co_await finish(std::move(recording));
    } catch (const std::exception& e) {
      failure = e.what();
    }
    co_return failure;
  }

  // settle(), logging a failure; nothing to wait for when `recording` is null.
  awaitable<void> settle_logged(std::int64_t mailbox, std::shared_ptr<Pending<std::size_t>> recording) {
    if (!recording) co_return;
    auto settled = settle(std::move(recording));
    if (auto failed = co_await std::move(settled))
      spdlog::warn("event=outbox_record_failed mailbox={} reason=\"{}\" action=\"rows left sending are retried after their lease\"", mailbox,
                   *failed);
  }

  // Sessions one after the other while each ends at the mailbox's messages per connection and
  // more rows are due: the next session's first chunk is claimed, and the mailbox's settings read
  // again, while the last one says QUIT; its last chunk's outcomes commit while the next session
  // sends (as a chunk's do within a session), and no new look at the queue (dispatch) is needed
  // between them. The settings are read again for each session, as dispatch() would: a mailbox
  // made inactive, or given a new password, during a mailing is honoured from its next session on.
  awaitable<void> connection(std::shared_ptr<const SendSettings> settings) {
    auto self = shared_from_this();
    const auto mailbox = settings->id;
    std::shared_ptr<Pending<Chunk>> first;
    std::shared_ptr<Pending<std::size_t>> recording;
    for (;;) {
      auto one = session(settings, std::move(first), std::move(recording));
      SessionEnd end = co_await std::move(one);
      first = std::move(end.successor);
      recording = std::move(end.recording);
      if (!first || stopping) break;
      std::optional<std::string> failure;
      const int limit_before = settings->max_per_connection;
      try {
        auto load = finish(std::move(end.settings));
        settings = std::make_shared<const SendSettings>(co_await std::move(load));
      } catch (const std::exception& e) {
        failure = e.what();
      }
      const auto t = throttled.find(mailbox);
      const bool wait = t != throttled.end() && std::chrono::steady_clock::now() < t->second;
      // Lowered limits: the chunk claimed under the old one may be too large for the new one, and
      // a chain beyond the new number of connections ends here.
      const bool lowered = !failure && (settings->max_per_connection < limit_before ||
                                        connections[mailbox] > transport_max_connections(*settings, s.config));
      if (failure || !settings->exists || !settings->active || wait || lowered) {
        if (failure) spdlog::warn("event=outbox_settings_failed mailbox={} reason=\"{}\"", mailbox, *failure);
        break;  // the claimed rows go back; dispatch() decides what happens to them
      }
    }
    auto settled = settle_logged(mailbox, std::move(recording));
    co_await std::move(settled);
    if (first) {  // the rows claimed for a session that will not be go back to the queue
      auto back = give_back(mailbox, std::move(first));
      co_await std::move(back);
    }
  }

  awaitable<SendSettings> read_settings(std::int64_t mailbox) {
    auto load = store_transact(s.store, [&secrets = s.secrets, mailbox](pqxx::work& tx) { return load_send_settings(tx, secrets, mailbox); });
    co_return co_await std::move(load);
  }

  // The chunk a claim gave; nothing (logged) when the claim failed.
  awaitable<std::optional<Chunk>> taken(std::int64_t mailbox, std::shared_ptr<Pending<Chunk>> pending) {
    std::optional<Chunk> chunk;
    std::optional<std::string> failure;
    try {
      auto claimed = finish(std::move(pending));
      chunk = co_await std::move(claimed);
    } catch (const std::exception& e) {
      failure = e.what();
    }
    if (failure) spdlog::warn("event=outbox_claim_failed mailbox={} reason=\"{}\"", mailbox, *failure);
    co_return chunk;
  }

  // Rows claimed for a session that will not send them go back to the queue, due now. If that
  // fails too, their lease runs out and outbox_recover() takes them back.
  awaitable<void> give_back(std::int64_t mailbox, std::shared_ptr<Pending<Chunk>> pending) {
    auto take = taken(mailbox, std::move(pending));
    const std::optional<Chunk> chunk = co_await std::move(take);
    if (!chunk || chunk->rows.empty()) co_return;
    auto back = std::make_shared<ChunkOutcomes>();
    for (const auto& row : chunk->rows) back->untried.push_back(row.id);
    std::optional<std::string> failure;
    try {
      auto record = record_chunk(mailbox, back);
      co_await std::move(record);
    } catch (const std::exception& e) {
      failure = e.what();
    }
    if (failure)
      spdlog::warn("event=outbox_record_failed mailbox={} reason=\"{}\" action=\"rows left sending are retried after their lease\"", mailbox,
                   *failure);
  }

  // One SMTP session: chunks of at most outbox_chunk_rows, up to the mailbox's messages per
  // connection, each sent within the per-minute limit. While chunk n is on the wire, chunk n-1's
  // outcomes commit and chunk n+1 is claimed and composed, so neither PostgreSQL's commit nor the
  // composition stops the connection (store/outbox.hpp: what that means for duplicates).
  // `first`: the first chunk, already being claimed by the session before; without it the
  // first chunk is claimed while the connection opens. `recording`: the session before's last
  // chunk, committing. Returns, when this one stopped at the limit, what the next session starts
  // from (SessionEnd); else nothing, its last commit done.
  awaitable<SessionEnd> session(std::shared_ptr<const SendSettings> settings, std::shared_ptr<Pending<Chunk>> first,
                                std::shared_ptr<Pending<std::size_t>> recording) {
    auto self = shared_from_this();
    const auto mailbox = settings->id;
    const auto lease = s.config.outbox.lease;
    const int limit = settings->max_per_connection, per_minute = settings->max_per_minute;
    // The first chunk; no more rows than the per-minute limit lets go now (but one at least).
    auto first_size = [&] { return std::min({outbox_chunk_rows, limit, std::max(1, rate_room(mailbox, per_minute))}); };
    // Claimed already: no connection is opened when nothing was left; still being claimed: the
    // connection opens meanwhile.
    const bool prefetched = first != nullptr && first->done;
    const bool chained = first != nullptr;  // its first chunk claimed by the session before
    std::optional<Chunk> taken_first;
    if (prefetched) {
      auto take = taken(mailbox, std::move(first));
      taken_first = co_await std::move(take);
      if (!taken_first || taken_first->rows.empty()) {
        auto inherited = settle_logged(mailbox, std::move(recording));
        co_await std::move(inherited);
        co_return SessionEnd{};
      }
    } else if (!first) {
      first = start(prepare_chunk(mailbox, first_size()));
    }

    std::shared_ptr<Transport> client;
    std::optional<TransportFailure> open_failure;
    try {
      client = make_transport(strand, *settings, deps);
      transports.insert(client);
      co_await client->open();
    } catch (const TransportFailure& f) {
      open_failure = f;
    }
    if (!prefetched) {
      auto take = taken(mailbox, std::move(first));
      taken_first = co_await std::move(take);
      if (!taken_first || taken_first->rows.empty()) {
        if (client) {
          if (!open_failure) co_await client->quit();
          transports.erase(client);
        }
        auto inherited = settle_logged(mailbox, std::move(recording));
        co_await std::move(inherited);
        co_return SessionEnd{};
      }
    }
    Chunk chunk = std::move(*taken_first);
    int claimed = static_cast<int>(chunk.rows.size());
    if (!open_failure)
      spdlog::info("event=outbox_session mailbox={} type={} rows={} limit={} chained={}", mailbox, settings->type, claimed, limit, chained);
    if (open_failure) {
      spdlog::warn("event=outbox_connect_failed mailbox={} type={} step={} permanent={} reason=\"{}\"", mailbox, settings->type,
                   open_failure->step, open_failure->permanent, open_failure->what());
      if (open_failure->retry_after) note_throttled(mailbox, *open_failure->retry_after);
      auto outcomes = std::make_shared<ChunkOutcomes>();
      for (const auto& row : chunk.rows)
        outcomes->failed.push_back(failed_row(row.id, *open_failure));
      auto inherited = settle_logged(mailbox, std::move(recording));
      co_await std::move(inherited);
      auto record = record_chunk(mailbox, outcomes);
      co_await std::move(record);
      if (client) transports.erase(client);
      co_return SessionEnd{};
    }

    std::shared_ptr<Pending<Chunk>> next;                // the chunk after this one, being taken
    std::shared_ptr<Pending<Chunk>> successor;           // the next session's first chunk, taken during the last one
    // `recording`: the previous chunk's outcomes, committing (at first the session before's)
    std::optional<std::string> store_failure;            // a commit failed: stop after this chunk
    bool quit_with_last = false;                         // the last row was accepted with the QUIT in its write
    auto lease_from = chunk.claimed_at;                   // the oldest lease start of the rows held
    std::optional<std::chrono::steady_clock::time_point> next_extended;
    for (;;) {
      // Take the next chunk now, if the limits leave room for it beside what this one will send.
      if (!next && !stopping && claimed < limit) {
        const int n = std::min({outbox_chunk_rows, limit - claimed, rate_room(mailbox, per_minute) - static_cast<int>(chunk.rows.size())});
        if (n > 0) {
          next = start(prepare_chunk(mailbox, n));
          next_extended.reset();
        }
      } else if (!successor && !stopping && claimed >= limit) {
        // The last chunk of the session: the next session's first one is taken while it is sent,
        // not after (the next connection would wait for it), when the minute leaves room for both.
        const int n = std::min({outbox_chunk_rows, limit, rate_room(mailbox, per_minute) - static_cast<int>(chunk.rows.size())});
        if (n > 0) successor = start(prepare_chunk(mailbox, n));
      }
      auto outcomes = std::make_shared<ChunkOutcomes>();
      // The row handed to the transport as the one after the row before: its share of the minute
      // taken then, and over SMTP with PIPELINING its envelope sent with that row's content (RFC
      // 2920). It is sent next whatever happens; only a broken connection stops it.
      std::optional<std::size_t> announced;
      for (std::size_t i = 0; i < chunk.rows.size(); ++i) {
        auto& row = chunk.rows[i];
        const bool was_announced = announced == i;
        // Within the per-minute limit; the leases of the rows held are kept alive while it waits.
        for (;;) {
          if (std::chrono::steady_clock::now() - lease_from > lease / 3) {
            std::vector<std::int64_t> held;
            for (std::size_t j = i; j < chunk.rows.size(); ++j) held.push_back(chunk.rows[j].id);
            const bool with_next = next && next->done && !next->error;
            if (with_next)
              for (const auto& r : next->value.rows) held.push_back(r.id);
            if (successor && successor->done && !successor->error)  // its session extends them from its claim on
              for (const auto& r : successor->value.rows) held.push_back(r.id);
            auto extend = store_transact(s.store, [held, lease](pqxx::work& tx) { outbox_extend(tx, held, lease); });
            co_await std::move(extend);
            lease_from = std::chrono::steady_clock::now();
            if (with_next) next_extended = lease_from;
          }
          if (was_announced || stopping || !client->usable()) break;
          const auto wait = rate_take(mailbox, per_minute);
          if (!wait) break;
          asio::steady_timer timer(strand);
          timer.expires_after(std::min<std::chrono::steady_clock::duration>(*wait, lease / 3));
          co_await timer.async_wait(asio::as_tuple(use_awaitable));
        }
        if ((stopping && !was_announced) || !client->usable()) {  // not tried on this connection: back to the queue, due now
          outcomes->untried.push_back(row.id);
          continue;
        }
        const TransportEnvelope envelope = transport_envelope(row);
        // The next row goes with this one's content when it may be sent right after it; the
        // session's last row (its limit reached) takes the QUIT along.
        TransportEnvelope next_envelope;
        TransportAfter after;
        if (i + 1 < chunk.rows.size() && !stopping && !rate_take(mailbox, per_minute)) {
          next_envelope = transport_envelope(chunk.rows[i + 1]);
          after.next_envelope = &next_envelope;
          after.next_raw = &chunk.rows[i + 1].raw;
          announced = i + 1;
        }
        after.quit = i + 1 == chunk.rows.size() && claimed >= limit;
        std::optional<TransportSent> result;
        std::optional<TransportFailure> failure;
        try {
          result = co_await client->send(envelope, row.raw, after);
        } catch (const TransportFailure& f) {
          failure = f;
        }
        if (result) {
          quit_with_last = after.quit;
          SentRow sent;
          sent.id = row.id;
          sent.raw = std::move(row.raw);
          sent.parse = std::move(row.parse);
          sent.refused = std::move(result->refused);
          sent.recipients = envelope.to.size();
          sent.reply = std::move(result->reply);
          outcomes->sent.push_back(std::move(sent));
        } else {
          spdlog::warn("event=outbox_send_failed id={} mailbox={} type={} step={} permanent={} retry_after={} reason=\"{}\"", row.id, mailbox,
                       settings->type, failure->step, failure->permanent, failure->retry_after ? failure->retry_after->count() : -1,
                       failure->what());
          if (failure->retry_after) note_throttled(mailbox, *failure->retry_after);
          outcomes->failed.push_back(failed_row(row.id, *failure));
        }
      }
      // This chunk is through: wait for the previous one's commit, then commit this one while the
      // next is sent.
      if (recording) {
        auto settled = settle(std::move(recording));
        store_failure = co_await std::move(settled);
        recording.reset();
      }
      if (!outcomes->empty()) recording = start(record_chunk(mailbox, outcomes));
      if (store_failure)
        spdlog::warn("event=outbox_record_failed mailbox={} reason=\"{}\" action=\"rows left sending are retried after their lease\"", mailbox,
                     *store_failure);
      const bool go_on = !store_failure && !stopping && client->usable() && claimed < limit;
      if (!next && go_on)  // the limit left no room before: take it now (a row waits for the minute)
        next = start(prepare_chunk(mailbox, std::min({outbox_chunk_rows, limit - claimed, std::max(1, rate_room(mailbox, per_minute))})));
      if (!next) break;
      std::optional<Chunk> taken;
      std::optional<std::string> take_failure;
      try {
        auto pending = finish(std::move(next));
        taken = co_await std::move(pending);
      } catch (const std::exception& e) {
        take_failure = e.what();
      }
      next.reset();
      if (take_failure) {
        spdlog::warn("event=outbox_claim_failed mailbox={} reason=\"{}\"", mailbox, *take_failure);
        break;
      }
      if (!go_on || taken->rows.empty()) {  // taken but not to be sent here: give them back
        if (!taken->rows.empty()) {
          auto back = std::make_shared<ChunkOutcomes>();
          for (const auto& row : taken->rows) back->untried.push_back(row.id);
          if (recording) {
            auto settled = settle(std::move(recording));
            co_await std::move(settled);
            recording.reset();
          }
          recording = start(record_chunk(mailbox, back));
        }
        break;
      }
      lease_from = next_extended ? std::max(taken->claimed_at, *next_extended) : taken->claimed_at;
      claimed += static_cast<int>(taken->rows.size());
      chunk = std::move(*taken);
    }
    // At the limit with the connection fine (or ended by a QUIT that went with the last message):
    // the next session gets its first chunk (taken during the last one, or now) and the mailbox's
    // settings, read while this one says QUIT; this one's last outcomes commit meanwhile and the
    // next session awaits them (a failure ends that one after its first chunk).
    SessionEnd end;
    if (claimed >= limit && !store_failure && !stopping && (client->usable() || quit_with_last)) {
      end.successor = successor ? std::move(successor) : start(prepare_chunk(mailbox, first_size()));
      end.settings = start(read_settings(mailbox));
      end.recording = std::move(recording);
    } else {
      auto settled = settle_logged(mailbox, std::move(recording));
      co_await std::move(settled);
      if (successor) {  // taken for a next session that will not be: back to the queue
        auto back = give_back(mailbox, std::move(successor));
        co_await std::move(back);
      }
    }
    co_await client->quit();
    transports.erase(client);
    co_return end;
  }

  static OutboxFailed failed_row(std::int64_t id, const TransportFailure& f) {
    OutboxFailed out;
    out.id = id;
    out.permanent = f.permanent;
    out.step = f.step;
    out.reason = f.what();
    if (f.retry_after) out.not_before = *f.retry_after;
    return out;
  }

  // The provider said to wait: no new connection for the mailbox before then (rows given back
  // untried stay due, but are not taken until the wait is over).
  void note_throttled(std::int64_t mailbox, std::chrono::seconds wait) {
    auto& until = throttled[mailbox];
    until = std::max(until, std::chrono::steady_clock::now() + wait);
  }
};

OutboxWorker::OutboxWorker(asio::io_context& io, Services& services) : impl_(std::make_shared<Impl>(io, services)) {}

OutboxWorker::~OutboxWorker() { stop(); }

void OutboxWorker::start() { asio::co_spawn(impl_->strand, impl_->loop(), asio::detached); }

void OutboxWorker::stop() {
  impl_->stopping = true;
  asio::post(impl_->strand, [impl = impl_] {
    impl->timer.cancel();
    for (const auto& c : impl->transports) c->close();
  });
}

void OutboxWorker::wake() {
  asio::post(impl_->strand, [impl = impl_] { impl->timer.cancel(); });
}

awaitable<MailboxTestResult> test_mailbox_sending(Services& s, std::int64_t mailbox_id) {
  auto load = store_transact(s.store, [&secrets = s.secrets, mailbox_id](pqxx::work& tx) { return load_send_settings(tx, secrets, mailbox_id); });
  const SendSettings settings = co_await std::move(load);
  MailboxTestResult out;
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
  // Its own HTTP client: the answer should come from a fresh connection, as a new mailbox's would.
  http::Client http(executor, http::client_options(s.config));
  GraphTokens tokens(executor, s.config);  // a fresh token: the test is of the credentials as saved
  const TransportDeps deps{s.config, http, graph_token_source(tokens), s.graph_slots};
  TransportEnvelope envelope;
  envelope.from = settings.address;
  envelope.to = {settings.address};
  std::unique_ptr<Transport> transport;
  std::optional<TransportFailure> failure;
  try {
    transport = make_transport(executor, settings, deps);
    co_await transport->open();
    auto result = co_await transport->send(envelope, raw, TransportAfter{.quit = true});
    out.ok = true;
    out.reply = result.reply;
  } catch (const TransportFailure& f) {
    failure = f;
  }
  if (failure) {
    out.step = failure->step;
    out.reply = failure->what();
  }
  if (transport) co_await transport->quit();
  co_return out;
}

}  // namespace mailgate
