// protocol/smtp_client against real peers on loopback: Postfix's smtp-sink (pipelining, refusals
// and hang-ups on any command) and an aiosmtpd server with STARTTLS and AUTH (bytes received,
// certificate checks, no plain-text fallback).
#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_future.hpp>

#include <poll.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include <set>
#include <thread>

#include "protocol/smtp_client.hpp"
#include "tests/support/run_coroutine.hpp"
#include "tests/support/smtp_servers.hpp"

namespace mailgate::smtp {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

template <class F>
auto run(F body) {
  return test::run_coroutine(body);
}

std::string message(int i, const std::string& extra_body = "") {
  return "From: Info <info@coop.nl>\r\nTo: jan@example.nl\r\nSubject: bericht " + std::to_string(i) + "\r\nMessage-ID: <m" +
         std::to_string(i) + "@coop.nl>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nRegel 1\r\n.begint met een punt\r\n" +
         extra_body + "Einde\r\n";
}

Account account(std::uint16_t port, const std::string& security, const std::string& ca = {}) {
  Account a;
  a.endpoint = net::Endpoint{"localhost", port, security, ca};
  a.helo_name = "mailgate.test";
  return a;
}

Timeouts quick() { return Timeouts{2s, 3s, 3s}; }

// Runs open + send and returns the failure (or nullopt when it was sent).
std::optional<Failure> try_send(const Account& a, const Envelope& env, const std::string& msg) {
  return run([&](auto ex) -> asio::awaitable<std::optional<Failure>> {
    Client c(ex, a, quick());
    std::optional<Failure> failure;
    try {
      co_await c.open();
      co_await c.send(env, msg);
      co_await c.quit();
    } catch (const Failure& f) {
      failure = f;
    }
    co_return failure;
  });
}

TEST(SmtpClient, StartTlsAuthAndTheBytesArrive) {
  test::PySmtpServer server({.tls = true, .require_tls = true, .user = "info@coop.nl", .password = "p\"a s\\é"});
  auto a = account(server.port(), "starttls", server.ca_file().string());
  a.username = "info@coop.nl";
  a.password = "p\"a s\\é";
  const std::string msg = message(1);
  auto result = run([&](auto ex) -> asio::awaitable<std::pair<SendResult, std::string>> {
    Client c(ex, a, quick());
    co_await c.open();
    EXPECT_TRUE(c.capabilities().auth.count("PLAIN"));
    const Envelope env{"info@coop.nl", {"jan@example.nl", "piet@example.nl"}};  // named: GCC 12 and co_await
    auto r = co_await c.send(env, msg);
    const std::string transcript = c.transcript_tail();
    co_await c.quit();
    co_return std::make_pair(r, transcript);
  });
  EXPECT_EQ(result.first.reply.code, 250);
  EXPECT_TRUE(result.first.refused.empty());
  EXPECT_EQ(result.second.find(a.password), std::string::npos) << "credentials never in the transcript";
  EXPECT_NE(result.second.find("AUTH PLAIN ***"), std::string::npos) << result.second;
  auto got = server.received();
  ASSERT_EQ(got.size(), 1u) << server.log();
  EXPECT_EQ(got[0].raw, msg) << "byte-exact after dot-stuffing and unstuffing";
  EXPECT_EQ(got[0].from, "info@coop.nl");
  EXPECT_EQ(got[0].to, (std::vector<std::string>{"jan@example.nl", "piet@example.nl"}));
  EXPECT_TRUE(got[0].tls);
  EXPECT_EQ(got[0].login, "info@coop.nl");
}

TEST(SmtpClient, ImplicitTlsWithAuthLogin) {
  test::PySmtpServer server({.tls = true, .user = "info@coop.nl", .password = "Geheim-1", .implicit_tls = true, .login_only = true});
  auto a = account(server.port(), "tls", server.ca_file().string());
  a.username = "info@coop.nl";
  a.password = "Geheim-1";
  auto f = try_send(a, {"info@coop.nl", {"jan@example.nl"}}, message(1));
  EXPECT_FALSE(f) << f->what() << server.log();
  auto got = server.received();
  ASSERT_EQ(got.size(), 1u) << server.log();
  EXPECT_TRUE(got[0].tls);
  EXPECT_EQ(got[0].login, "info@coop.nl");
  EXPECT_EQ(got[0].raw, message(1));
}

TEST(SmtpClient, WrongPasswordIsAPermanentAuthFailure) {
  test::PySmtpServer server({.tls = true, .user = "info@coop.nl", .password = "Juist-1"});
  auto a = account(server.port(), "starttls", server.ca_file().string());
  a.username = "info@coop.nl";
  a.password = "Fout-1";
  auto f = try_send(a, {"info@coop.nl", {"jan@example.nl"}}, message(1));
  ASSERT_TRUE(f);
  EXPECT_EQ(f->step, Step::auth);
  EXPECT_TRUE(f->permanent);
  EXPECT_EQ(f->code, 535) << f->what();
  EXPECT_TRUE(server.received().empty());
}

TEST(SmtpClient, NoStartTlsOfferedMeansNothingIsSentInPlain) {
  test::PySmtpServer server;  // no TLS at all
  auto a = account(server.port(), "starttls");
  a.username = "info@coop.nl";
  a.password = "geheim";
  auto f = try_send(a, {"info@coop.nl", {"jan@example.nl"}}, message(1));
  ASSERT_TRUE(f);
  EXPECT_EQ(f->step, Step::tls);
  EXPECT_FALSE(f->permanent) << "retried later, as Postfix defers";
  EXPECT_NE(std::string(f->what()).find("does not offer STARTTLS"), std::string::npos) << f->what();
  EXPECT_TRUE(server.received().empty());
}

TEST(SmtpClient, CertificateForAnotherNameOrFromAnUnknownCaIsRefused) {
  test::PySmtpServer other_name({.tls = true, .cert_host = "mail.elders.nl"});
  auto f = try_send(account(other_name.port(), "starttls", other_name.ca_file().string()), {"info@coop.nl", {"jan@example.nl"}}, message(1));
  ASSERT_TRUE(f);
  EXPECT_EQ(f->step, Step::tls) << f->what();
  EXPECT_TRUE(other_name.received().empty());

  test::PySmtpServer unknown_ca({.tls = true});
  f = try_send(account(unknown_ca.port(), "starttls"), {"info@coop.nl", {"jan@example.nl"}}, message(1));
  ASSERT_TRUE(f);
  EXPECT_EQ(f->step, Step::tls) << f->what();
  EXPECT_TRUE(unknown_ca.received().empty());
}

TEST(SmtpClient, TransientThenPermanentReplies) {
  test::PySmtpServer server({.fail_first = 1, .reject = {"weg@example.nl"}});
  auto a = account(server.port(), "plain");
  auto f = try_send(a, {"info@coop.nl", {"jan@example.nl"}}, message(1));
  ASSERT_TRUE(f);
  EXPECT_EQ(f->step, Step::data);
  EXPECT_FALSE(f->permanent);
  EXPECT_EQ(f->code, 451);
  EXPECT_FALSE(try_send(a, {"info@coop.nl", {"jan@example.nl"}}, message(2))) << "the second attempt goes through";

  f = try_send(a, {"info@coop.nl", {"weg@example.nl"}}, message(3));
  ASSERT_TRUE(f);
  EXPECT_EQ(f->step, Step::rcpt);
  EXPECT_TRUE(f->permanent);
  EXPECT_NE(std::string(f->what()).find("weg@example.nl: 550 5.1.1"), std::string::npos) << f->what();

  // One refused among accepted recipients: sent, with the refusal reported.
  auto partial = run([&](auto ex) -> asio::awaitable<SendResult> {
    Client c(ex, a, quick());
    co_await c.open();
    const Envelope env{"info@coop.nl", {"jan@example.nl", "weg@example.nl"}};
    auto r = co_await c.send(env, message(4));
    co_await c.quit();
    co_return r;
  });
  ASSERT_EQ(partial.refused.size(), 1u);
  EXPECT_EQ(partial.refused[0].address, "weg@example.nl");
  EXPECT_EQ(server.received().size(), 2u);
}

TEST(SmtpClient, PipelinedSessionsReuseTheConnection) {
  test::SmtpSink sink;
  auto counts = run([&](auto ex) -> asio::awaitable<std::size_t> {
    Client c(ex, account(sink.port(), "plain"), quick());
    co_await c.open();
    EXPECT_TRUE(c.capabilities().pipelining);
    const Envelope env{"info@coop.nl", {"jan@example.nl"}};
    for (int i = 0; i < 2; ++i) co_await c.send(env, message(i));
    // The rest with each next envelope announced with the content before it (RFC 2920), the last
    // with QUIT in the same write.
    const std::vector<std::string> rest{message(2), message(3), message(4)};
    for (std::size_t i = 0; i < rest.size(); ++i) {
      After after;
      if (i + 1 < rest.size())
        after.next = Outgoing{&env, &rest[i + 1]};
      else
        after.quit = true;
      co_await c.send(env, rest[i], after);
    }
    EXPECT_FALSE(c.usable()) << "QUIT is on its way";
    const auto n = c.sent();
    co_await c.quit();
    co_return n;
  });
  EXPECT_EQ(counts, 5u);
  auto dumps = sink.transactions();
  ASSERT_EQ(dumps.size(), 5u);
  std::set<std::string> subjects;  // the dump files come in no particular order
  for (const auto& d : dumps) {
    if (const auto at = d.find("Subject: "); at != std::string::npos) subjects.insert(d.substr(at, d.find('\n', at) - at));
    EXPECT_NE(d.find("X-Mail-Args: <info@coop.nl>"), std::string::npos) << d;
    EXPECT_NE(d.find("X-Rcpt-Args: <jan@example.nl>"), std::string::npos) << d;
    EXPECT_NE(d.find("\n.begint met een punt\n"), std::string::npos) << "dot-stuffed on the wire, unstuffed by the server: " << d;
  }
  EXPECT_EQ(subjects, (std::set<std::string>{"Subject: bericht 0", "Subject: bericht 1", "Subject: bericht 2", "Subject: bericht 3",
                                              "Subject: bericht 4"}));
}

// A server on 127.0.0.1 that follows a script in a thread of its own: it waits for exact
// input before it answers, so a test can show what the client sent before it read a reply.
class ScriptedServer {
 public:
  ScriptedServer() {
    listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (::bind(listener_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(listener_, 1) != 0 ||
        ::getsockname(listener_, reinterpret_cast<sockaddr*>(&a), &len) != 0)
      throw std::runtime_error("ScriptedServer: cannot listen");
    port_ = ntohs(a.sin_port);
  }
  ~ScriptedServer() {
    if (thread_.joinable()) thread_.join();
    if (conn_ >= 0) ::close(conn_);
    ::close(listener_);
  }
  std::uint16_t port() const { return port_; }

  // Runs `script` on the first connection, in a thread; join() waits for it.
  template <class F>
  void run(F script) {
    thread_ = std::thread([this, script] {
      if (!wait_readable(listener_, 5000)) return;
      conn_ = ::accept(listener_, nullptr, nullptr);
      script(*this);
    });
  }
  void join() { thread_.join(); }

  void say(const std::string& s) { (void)!::write(conn_, s.data(), s.size()); }
  // Reads until everything read ends with `suffix` (false after `ms` or at the end of the
  // connection); the input is kept in `seen`.
  bool expect_until(const std::string& suffix, int ms = 2000) {
    while (!(seen.size() >= mark_ + suffix.size() && seen.compare(seen.size() - suffix.size(), suffix.size(), suffix) == 0)) {
      if (!read_more(ms)) return false;
    }
    mark_ = seen.size();
    return true;
  }
  // Reads until the peer closes (true) or `ms` pass (false).
  bool expect_close(int ms = 2000) {
    while (read_more(ms)) {
    }
    return closed_;
  }

  std::string seen;

 private:
  static bool wait_readable(int fd, int ms) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, ms) == 1;
  }
  bool read_more(int ms) {
    if (closed_ || !wait_readable(conn_, ms)) return false;
    char buf[4096];
    const auto n = ::read(conn_, buf, sizeof buf);
    if (n <= 0) {
      closed_ = true;
      return false;
    }
    seen.append(buf, static_cast<std::size_t>(n));
    return true;
  }

  int listener_ = -1, conn_ = -1;
  std::uint16_t port_ = 0;
  std::size_t mark_ = 0;
  bool closed_ = false;
  std::thread thread_;
};

// The start every script shares: greeting, EHLO answered with `capabilities` (the lines after the
// first, each "250-..." but the last "250 ..."), then the first envelope accepted.
bool start_session(ScriptedServer& s, const std::string& capabilities) {
  s.say("220 scripted ESMTP\r\n");
  if (!s.expect_until("\r\n")) return false;
  s.say("250-scripted\r\n" + capabilities);
  if (!s.expect_until("DATA\r\n")) return false;
  s.say("250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go on\r\n");
  return true;
}

// The server answers the first message's content only once the second message's envelope and
// DATA have arrived: a client that waited for that answer first would never get it.
TEST(SmtpClient, TheNextEnvelopeGoesWithTheContentAndARefusedContentNeedsNoReset) {
  ScriptedServer server;
  std::vector<std::string> steps;  // what the server got, in order, before each answer
  server.run([&](ScriptedServer& s) {
    steps.push_back(start_session(s, "250-PIPELINING\r\n250-SIZE 100000\r\n250 8BITMIME\r\n") ? "envelope 1" : "no envelope 1");
    // Content 1, then envelope 2 and its DATA, before any answer to content 1.
    steps.push_back(s.expect_until("\r\n.\r\nMAIL FROM:<info@coop.nl> SIZE=" + std::to_string(message(2).size()) +
                                   "\r\nRCPT TO:<piet@example.nl>\r\nDATA\r\n")
                        ? "content 1 + envelope 2"
                        : "content 1 without envelope 2");
    s.say("554 5.6.0 content refused\r\n250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go on\r\n");
    steps.push_back(s.expect_until("\r\n.\r\n") ? "content 2" : "no content 2");
    s.say("250 2.0.0 queued as B\r\n");
    steps.push_back(s.expect_until("QUIT\r\n") ? "quit" : "no quit");
    s.say("221 bye\r\n");
  });
  auto outcome = run([&](auto ex) -> asio::awaitable<std::pair<std::optional<Failure>, std::string>> {
    Client c(ex, account(server.port(), "plain"), quick());
    co_await c.open();
    const Envelope first{"info@coop.nl", {"jan@example.nl"}}, second{"info@coop.nl", {"piet@example.nl"}};
    const std::string m1 = message(1), m2 = message(2);
    std::optional<Failure> failure;
    try {
      co_await c.send(first, m1, {.next = Outgoing{&second, &m2}});
    } catch (const Failure& f) {
      failure = f;
    }
    auto r = co_await c.send(second, m2);
    co_await c.quit();
    co_return std::make_pair(failure, r.reply.text());
  });
  server.join();
  EXPECT_EQ(steps, (std::vector<std::string>{"envelope 1", "content 1 + envelope 2", "content 2", "quit"}));
  ASSERT_TRUE(outcome.first) << "the refused content is the first message's failure";
  EXPECT_EQ(outcome.first->step, Step::data);
  EXPECT_TRUE(outcome.first->permanent);
  EXPECT_EQ(outcome.first->code, 554);
  EXPECT_EQ(outcome.second, "250 2.0.0 queued as B");
  EXPECT_EQ(server.seen.find("RSET"), std::string::npos) << "the transaction ended with the reply; a RSET would end the next one: " << server.seen;
}

// The session's last message takes QUIT along: the server answers the content only once the QUIT
// has come, and the client reads the goodbye without sending a second QUIT. A refused last
// content needs no RSET either.
TEST(SmtpClient, TheLastContentTakesQuitAlong) {
  for (const bool refuse : {false, true}) {
    ScriptedServer server;
    std::vector<std::string> steps;
    bool closed = false;
    server.run([&](ScriptedServer& s) {
      if (!start_session(s, "250 PIPELINING\r\n")) return;
      steps.push_back(s.expect_until("\r\n.\r\nQUIT\r\n") ? "content + quit" : "content without quit");
      s.say(std::string(refuse ? "452 4.3.1 no room\r\n" : "250 queued\r\n") + "221 bye\r\n");
      closed = s.expect_close();
    });
    auto outcome = run([&](auto ex) -> asio::awaitable<std::pair<std::optional<Failure>, bool>> {
      Client c(ex, account(server.port(), "plain"), quick());
      co_await c.open();
      const Envelope env{"info@coop.nl", {"jan@example.nl"}};
      std::optional<Failure> failure;
      try {
        co_await c.send(env, message(1), {.quit = true});
      } catch (const Failure& f) {
        failure = f;
      }
      const bool usable = c.usable();
      co_await c.quit();
      co_return std::make_pair(failure, usable);
    });
    server.join();
    EXPECT_EQ(steps, std::vector<std::string>{"content + quit"});
    EXPECT_TRUE(closed);
    EXPECT_FALSE(outcome.second) << "nothing more can be sent after QUIT";
    EXPECT_EQ(server.seen.find("QUIT"), server.seen.rfind("QUIT")) << "one QUIT: " << server.seen;
    EXPECT_EQ(server.seen.find("RSET"), std::string::npos) << server.seen;
    ASSERT_EQ(outcome.first.has_value(), refuse);
    if (refuse) {
      EXPECT_EQ(outcome.first->code, 452);
      EXPECT_FALSE(outcome.first->permanent);
    }
  }
}

// A message announced but not sent is never delivered: quit() drops the connection instead of
// sending QUIT (which the server would take as content), and so does sending another message.
TEST(SmtpClient, AnAnnouncedMessageNotSentIsDroppedWithTheConnection) {
  for (const bool other_message : {false, true}) {
    ScriptedServer server;
    bool closed = false;
    server.run([&](ScriptedServer& s) {
      if (!start_session(s, "250-PIPELINING\r\n250 SIZE 100000\r\n")) return;
      s.expect_until("\r\n.\r\nMAIL FROM:<info@coop.nl> SIZE=" + std::to_string(message(2).size()) + "\r\nRCPT TO:<piet@example.nl>\r\nDATA\r\n");
      s.say("250 queued as A\r\n250 ok\r\n250 ok\r\n354 go on\r\n");
      closed = s.expect_close();
    });
    auto failure = run([&](auto ex) -> asio::awaitable<std::optional<Failure>> {
      Client c(ex, account(server.port(), "plain"), quick());
      co_await c.open();
      const Envelope first{"info@coop.nl", {"jan@example.nl"}}, second{"info@coop.nl", {"piet@example.nl"}};
      const std::string m1 = message(1), m2 = message(2);
      co_await c.send(first, m1, {.next = Outgoing{&second, &m2}});
      std::optional<Failure> f;
      if (other_message) {
        try {
          co_await c.send(first, m1);
        } catch (const Failure& e) {
          f = e;
        }
        EXPECT_FALSE(c.usable());
      }
      co_await c.quit();
      co_return f;
    });
    server.join();
    EXPECT_TRUE(closed) << "the connection was dropped";
    const std::string after = server.seen.substr(server.seen.rfind("DATA\r\n") + 6);
    EXPECT_EQ(after, "") << "nothing after the announced DATA: no content, no final dot, no QUIT";
    if (other_message) {
      ASSERT_TRUE(failure);
      EXPECT_FALSE(failure->permanent) << "the other message was not sent: it can be retried";
    }
  }
}

TEST(SmtpClient, RefusalsAndHangUpsOfSmtpSink) {
  {
    test::SmtpSink sink("-f mail");  // 5xx to MAIL
    auto f = try_send(account(sink.port(), "plain"), {"info@coop.nl", {"jan@example.nl"}}, message(1));
    ASSERT_TRUE(f);
    EXPECT_EQ(f->step, Step::mail);
    EXPECT_TRUE(f->permanent);
  }
  {
    test::SmtpSink sink("-r rcpt");  // 4xx to RCPT
    auto f = try_send(account(sink.port(), "plain"), {"info@coop.nl", {"jan@example.nl"}}, message(1));
    ASSERT_TRUE(f);
    EXPECT_EQ(f->step, Step::rcpt);
    EXPECT_FALSE(f->permanent);
  }
  {
    test::SmtpSink sink("-q .");  // hangs up after the end of data, without a reply
    auto f = try_send(account(sink.port(), "plain"), {"info@coop.nl", {"jan@example.nl"}}, message(1));
    ASSERT_TRUE(f);
    EXPECT_EQ(f->step, Step::data);
    EXPECT_FALSE(f->permanent) << "unknown outcome: retried (the documented duplicate window)";
  }
  {
    test::SmtpSink sink("-Q ehlo");  // 421 and hang up
    auto f = try_send(account(sink.port(), "plain"), {"info@coop.nl", {"jan@example.nl"}}, message(1));
    ASSERT_TRUE(f);
    EXPECT_FALSE(f->permanent);
    EXPECT_EQ(f->code, 421);
  }
}

TEST(SmtpClient, ConnectionRefusedIsTransient) {
  test::SmtpSink sink;
  const auto port = sink.port();
  auto a = account(port, "plain");
  a.endpoint.port = static_cast<std::uint16_t>(port == 65535 ? 1 : port + 1);  // most likely closed
  auto f = try_send(a, {"info@coop.nl", {"jan@example.nl"}}, message(1));
  ASSERT_TRUE(f);
  EXPECT_EQ(f->step, Step::connect);
  EXPECT_FALSE(f->permanent);
}

}  // namespace
}  // namespace mailgate::smtp
