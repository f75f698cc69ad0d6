// protocol/smtp_client against real peers on loopback: Postfix's smtp-sink (pipelining, refusals
// and hang-ups on any command) and an aiosmtpd server with STARTTLS and AUTH (bytes received,
// certificate checks, no plain-text fallback).
#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_future.hpp>

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
    for (int i = 0; i < 5; ++i) co_await c.send(env, message(i));
    const auto n = c.sent();
    co_await c.quit();
    co_return n;
  });
  EXPECT_EQ(counts, 5u);
  auto dumps = sink.transactions();
  ASSERT_EQ(dumps.size(), 5u);
  for (const auto& d : dumps) {
    EXPECT_NE(d.find("X-Mail-Args: <info@coop.nl>"), std::string::npos) << d;
    EXPECT_NE(d.find("X-Rcpt-Args: <jan@example.nl>"), std::string::npos) << d;
    EXPECT_NE(d.find("\n.begint met een punt\n"), std::string::npos) << "dot-stuffed on the wire, unstuffed by the server: " << d;
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
