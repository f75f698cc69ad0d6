#include "daemon/graph_tokens.hpp"

#include <atomic>
#include <map>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include "config/config.hpp"

namespace mailgate {

namespace asio = boost::asio;
using asio::awaitable;
using Clock = std::chrono::steady_clock;

namespace {

constexpr auto kRefreshBefore = std::chrono::minutes(5);

std::string key_of(const GraphCredentials& c) { return c.tenant + '\n' + c.client_id + '\n' + c.scope; }

}  // namespace

struct GraphTokens::Impl : std::enable_shared_from_this<GraphTokens::Impl> {
  Impl(asio::any_io_executor ex, const Config& config)
      : strand(asio::make_strand(ex)), login_base(config.graph.login_base), client(ex, http::client_options(config)) {}

  struct Entry {
    explicit Entry(asio::any_io_executor ex) : wake(ex) {}
    std::string token, secret;  // the token and the secret it was obtained with
    Clock::time_point refresh_at;
    bool fetching = false;
    std::uint64_t round = 0;  // fetches finished
    std::exception_ptr error;  // of the last fetch (round), for the callers that waited on it
    std::string error_secret;
    asio::steady_timer wake;  // cancelled when a fetch finishes
  };

  asio::strand<asio::any_io_executor> strand;
  std::string login_base;
  http::Client client;
  std::atomic<std::uint64_t> requests{0};
  std::map<std::string, std::shared_ptr<Entry>> entries;  // on the strand only

  // Runs on the strand.
  awaitable<std::string> get(GraphCredentials c) {
    auto self = shared_from_this();
    auto& slot = entries[key_of(c)];
    if (!slot) slot = std::make_shared<Entry>(strand);
    const auto e = slot;
    for (;;) {
      if (!e->token.empty() && e->secret == c.client_secret && Clock::now() < e->refresh_at) co_return e->token;
      if (e->fetching) {  // somebody asks already: wait for that answer
        const auto round = e->round;
        while (e->fetching) co_await e->wake.async_wait(asio::as_tuple(asio::use_awaitable));
        if (e->round == round + 1 && e->error && e->error_secret == c.client_secret) std::rethrow_exception(e->error);
        continue;
      }
      e->fetching = true;
      e->wake.expires_at(Clock::time_point::max());
      oauth2::ClientCredentials cc;
      cc.login_base = login_base;
      cc.tenant = c.tenant;
      cc.client_id = c.client_id;
      cc.client_secret = c.client_secret;
      cc.scope = c.scope;
      auto request = oauth2::token_request(cc);
      std::exception_ptr error;
      oauth2::Token token;
      const auto asked_at = Clock::now();
      try {
        auto send_op = client.send(std::move(request));
        auto response = co_await std::move(send_op);
        token = oauth2::parse_token_response(response);
      } catch (...) {
        error = std::current_exception();
      }
      ++requests;
      e->fetching = false;
      ++e->round;
      if (error) {
        e->token.clear();
        e->error = error;
        e->error_secret = c.client_secret;
      } else {
        // Refreshed 5 minutes before it expires (or halfway, for a token that lives shorter).
        const auto margin = std::min<Clock::duration>(kRefreshBefore, token.expires_in / 2);
        e->token = std::move(token.access_token);
        e->secret = c.client_secret;
        e->refresh_at = asked_at + token.expires_in - margin;
        e->error = nullptr;
        spdlog::debug("event=oauth2_token tenant={} client_id={} expires_in_s={}", c.tenant, c.client_id, token.expires_in.count());
      }
      e->wake.cancel();
      if (error) std::rethrow_exception(error);
      co_return e->token;
    }
  }
};

GraphTokens::GraphTokens(asio::any_io_executor executor, const Config& config) : impl_(std::make_shared<Impl>(executor, config)) {}

GraphTokens::~GraphTokens() = default;

awaitable<std::string> GraphTokens::token(GraphCredentials credentials) {
  auto impl = impl_;
  auto op = asio::co_spawn(impl->strand, impl->get(std::move(credentials)), asio::use_awaitable);
  co_return co_await std::move(op);
}

void GraphTokens::invalidate(const GraphCredentials& credentials) {
  asio::post(impl_->strand, [impl = impl_, key = key_of(credentials)] {
    auto it = impl->entries.find(key);
    if (it != impl->entries.end() && !it->second->fetching) it->second->token.clear();
  });
}

std::uint64_t GraphTokens::requests() const { return impl_->requests; }

}  // namespace mailgate
