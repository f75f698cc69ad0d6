// protocol/imap_client against a private Dovecot: TLS and STARTTLS with certificate checks,
// authentication with any password, folders, FETCH byte-exact, IDLE, after-import actions.
#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_future.hpp>

#include <thread>

#include "protocol/imap_client.hpp"
#include "protocol/imap_parser.hpp"
#include "tests/support/run_coroutine.hpp"
#include "tests/support/dovecot.hpp"

namespace mailgate::imap {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

template <class F>
auto run(F body) {
  return test::run_coroutine(body);
}

std::string message(int i, std::size_t body_size = 100) {
  return "From: sender" + std::to_string(i) + "@example.nl\r\nTo: info@coop.nl\r\nSubject: bericht " + std::to_string(i) +
         "\r\nMessage-ID: <m" + std::to_string(i) + "@example.nl>\r\n\r\n" + std::string(body_size, 'a' + i % 26) + "\r\n";
}

// One Dovecot for the suite (starting one costs seconds); each test gets a user of its own.
class ImapClientTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { server = new test::Dovecot(); }
  static void TearDownTestSuite() { delete server; }
  void SetUp() override {
    jan = "jan" + std::to_string(++users);
    dovecot.add_user(jan, "Geheim \"wachtwoord\" \\ é");
  }
  Endpoint tls() { return {"localhost", dovecot.imaps_port(), "tls", dovecot.ca_file().string()}; }
  static inline test::Dovecot* server = nullptr;
  static inline int users = 0;
  test::Dovecot& dovecot = *server;
  std::string jan;
};

TEST_F(ImapClientTest, ImplicitTlsLoginFetchByteExact) {
  for (int i = 0; i < 5; ++i) dovecot.deliver(jan, "INBOX", message(i, i == 3 ? 300000 : 100));
  auto fetched = run([&](auto ex) -> asio::awaitable<std::vector<FetchedMessage>> {
    Client c(ex, tls());
    co_await c.connect();
    co_await c.login(jan, "Geheim \"wachtwoord\" \\ é");
    EXPECT_TRUE(c.has_capability("IDLE"));
    auto info = co_await c.select("INBOX");
    EXPECT_EQ(info.exists, 5u);
    EXPECT_GT(info.uidvalidity, 0u);
    std::vector<FetchedMessage> out;
    co_await c.fetch(1, 0, [&](FetchedMessage&& m) { out.push_back(std::move(m)); });
    co_await c.logout();
    co_return out;
  });
  ASSERT_EQ(fetched.size(), 5u);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(fetched[i].raw, message(i, i == 3 ? 300000 : 100)) << i;
    EXPECT_EQ(fetched[i].size, fetched[i].raw.size());
    EXPECT_EQ(fetched[i].uid, static_cast<std::uint32_t>(i + 1));
    EXPECT_FALSE(fetched[i].internal_date.empty());
  }
}

TEST_F(ImapClientTest, StartTlsAndLoginWithoutSaslPlain) {
  dovecot.add_user("piet", "a b\"c\\d é {5}");
  try {
    run([&](auto ex) -> asio::awaitable<int> {
      Client c(ex, {"127.0.0.1", dovecot.imap_port(), "starttls", dovecot.ca_file().string()});
      co_await c.connect();
      co_await c.login("piet", "a b\"c\\d é {5}");
      auto folders = co_await c.list_folders();
      EXPECT_FALSE(folders.empty());
      co_return 0;
    });
  } catch (const Error& e) {
    FAIL() << e.what() << "\n" << dovecot.log();
  }
}

TEST_F(ImapClientTest, CertificateChecks) {
  auto attempt = [&](Endpoint ep) -> std::optional<Error> {
    try {
      run([&](auto ex) -> asio::awaitable<int> {
        Client c(ex, ep);
        co_await c.connect();
        co_return 0;
      });
    } catch (const Error& e) {
      return e;
    }
    return std::nullopt;
  };
  EXPECT_FALSE(attempt(tls()));
  auto untrusted = attempt({"localhost", dovecot.imaps_port(), "tls", ""});  // system store: our test CA is unknown
  ASSERT_TRUE(untrusted);
  EXPECT_EQ(untrusted->kind, Error::Kind::tls);
  auto wrong_name = attempt({"127.0.0.2", dovecot.imaps_port(), "tls", dovecot.ca_file().string()});
  ASSERT_TRUE(wrong_name) << "the certificate names localhost and 127.0.0.1, not 127.0.0.2";
  EXPECT_EQ(wrong_name->kind, Error::Kind::tls);
}

TEST_F(ImapClientTest, IdleSeesANewMessageQuickly) {
  dovecot.deliver(jan, "INBOX", message(1));
  auto [changed, waited] = run([&](auto ex) -> asio::awaitable<std::pair<bool, std::chrono::milliseconds>> {
    Client c(ex, tls());
    co_await c.connect();
    co_await c.login(jan, "Geheim \"wachtwoord\" \\ é");
    co_await c.select("INBOX");
    std::thread later([&] {
      std::this_thread::sleep_for(300ms);
      dovecot.deliver(jan, "INBOX", message(2));
    });
    const auto start = std::chrono::steady_clock::now();
    bool changed = co_await c.idle(10s);
    later.join();
    auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
    std::vector<FetchedMessage> out;
    co_await c.fetch(2, 0, [&](FetchedMessage&& m) { out.push_back(std::move(m)); });
    EXPECT_EQ(out.size(), 1u);
    co_return std::make_pair(changed, waited);
  });
  EXPECT_TRUE(changed);
  EXPECT_LT(waited, 3s);
  // A quiet IDLE ends by itself after its time.
  auto quiet = run([&](auto ex) -> asio::awaitable<bool> {
    Client c(ex, tls());
    co_await c.connect();
    co_await c.login(jan, "Geheim \"wachtwoord\" \\ é");
    co_await c.select("INBOX");
    co_return co_await c.idle(500ms);
  });
  EXPECT_FALSE(quiet);
}

TEST_F(ImapClientTest, AfterImportActions) {
  for (int i = 0; i < 6; ++i) dovecot.deliver(jan, "INBOX", message(i));
  dovecot.deliver(jan, "Verwerkt/Ingelezen facturen", message(99));
  auto remaining = run([&](auto ex) -> asio::awaitable<std::vector<std::uint32_t>> {
    Client c(ex, tls());
    co_await c.connect();
    co_await c.login(jan, "Geheim \"wachtwoord\" \\ é");
    co_await c.select("INBOX");
    // Named arguments: GCC 12 mishandles temporaries inside co_await expressions.
    const std::vector<std::uint32_t> seen{1, 2}, moved{3, 4}, removed{5};
    const std::string target = mailbox_encode("Verwerkt/Ingelezen facturen");
    co_await c.mark_seen(seen);
    co_await c.move(moved, target);
    co_await c.remove(removed);
    co_return co_await c.search_uids(1);
  });
  EXPECT_EQ(remaining, (std::vector<std::uint32_t>{1, 2, 6}));
}

// Last: a failed login makes Dovecot slow down later logins from the same address.
TEST_F(ImapClientTest, WrongPasswordIsAPermanentAuthError) {
  try {
    run([&](auto ex) -> asio::awaitable<int> {
      Client c(ex, tls());
      co_await c.connect();
      co_await c.login(jan, "fout");
      co_return 0;
    });
    FAIL() << "login must fail";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind, Error::Kind::auth);
    EXPECT_TRUE(e.permanent());
    EXPECT_NE(std::string(e.what()).find("Authentication failed"), std::string::npos) << e.what() << "\nthe server's text is kept";
  }
}

TEST(ImapUidSet, Ranges) {
  EXPECT_EQ(uid_set({5, 1, 2, 3, 9, 10, 3}), "1:3,5,9:10");
  EXPECT_EQ(uid_set({7}), "7");
}

}  // namespace
}  // namespace mailgate::imap
