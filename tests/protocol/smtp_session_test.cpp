// protocol/smtp_session: transcripts. The client's bytes go in (all at once, as a pipelining
// client sends them, and one byte at a time); the server's bytes must be exactly these, and only
// the messages listed may be delivered.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

#include "protocol/smtp_session.hpp"
#include "tests/support/smtp_transcript.hpp"

namespace mailgate::smtpd {
namespace {

struct Delivered {
  Envelope envelope;
  std::string data;
};

// Answers like a receiver: known addresses accepted, "tls-only@..." only over TLS, others unknown.
RcptVerdict verdict(const std::string& address, bool tls) {
  static const std::set<std::string> known = {"coop-facturen-k3x9q2m7pz@ontvang.coop.nl", "tls-only@ontvang.coop.nl", "ander@ontvang.coop.nl"};
  if (address == "db-down@ontvang.coop.nl") return RcptVerdict::defer;
  if (!known.count(address)) return RcptVerdict::unknown;
  if (address.rfind("tls-only@", 0) == 0 && !tls) return RcptVerdict::need_tls;
  return RcptVerdict::accept;
}

// Runs the session over `client` fed in chunks of `chunk` bytes; STARTTLS "succeeds" at once.
std::string run(const std::string& client, std::size_t chunk, std::vector<Delivered>* delivered, Limits limits = {}) {
  Settings settings;
  settings.hostname = "ontvang.coop.nl";
  settings.tls_available = true;
  settings.limits = limits;
  Session s(settings);
  std::string out = s.greeting().text;
  bool closed = false;
  auto drain = [&] {
    while (auto e = s.next()) {
      switch (e->kind) {
        case Event::Kind::reply: out += e->text; break;
        case Event::Kind::check_rcpt: s.answer_rcpt(verdict(e->address, s.tls())); break;
        case Event::Kind::message:
          delivered->push_back({e->envelope, e->data});
          s.answer_message(250, "2.0.0", "Ok: queued as " + std::to_string(delivered->size()));
          break;
        case Event::Kind::start_tls:  // the rest of this client's plain-text bytes never reach the session
          out += e->text + "[TLS]\r\n";
          s.tls_started();
          closed = true;
          return;
        case Event::Kind::close:
          out += e->text;
          closed = true;
          return;
      }
    }
  };
  for (std::size_t at = 0; at < client.size() && !closed; at += chunk) {
    s.feed(std::string_view(client).substr(at, chunk));
    drain();
  }
  return out;
}

const std::string kGreeting = "220 ontvang.coop.nl ESMTP mailgate\r\n";
const std::string kEhlo =
    "250-ontvang.coop.nl\r\n250-PIPELINING\r\n250-SIZE 26214400\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n"
    "250-STARTTLS\r\n250 2.0.0 Ok\r\n";
const std::string kEhloTls =
    "250-ontvang.coop.nl\r\n250-PIPELINING\r\n250-SIZE 26214400\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n250 2.0.0 Ok\r\n";

struct Transcript {
  const char* name;
  std::string client, server;
  int delivered = 0;
  std::string data = {};  // of the last delivered message, when given
};

class SmtpSessionTranscripts : public ::testing::TestWithParam<Transcript> {};

TEST_P(SmtpSessionTranscripts, ExactlyTheseRepliesHoweverTheBytesArrive) {
  for (std::size_t chunk : {std::size_t(1), std::size_t(7), std::size_t(1 << 20)}) {
    std::vector<Delivered> delivered;
    EXPECT_EQ(run(GetParam().client, chunk, &delivered), GetParam().server) << "chunk " << chunk;
    ASSERT_EQ(static_cast<int>(delivered.size()), GetParam().delivered) << "chunk " << chunk;
    if (!GetParam().data.empty()) {
      EXPECT_EQ(delivered.back().data, GetParam().data) << "chunk " << chunk;
    }
  }
}

const std::string kFacturen = "coop-facturen-k3x9q2m7pz@ontvang.coop.nl";

INSTANTIATE_TEST_SUITE_P(
    Table, SmtpSessionTranscripts,
    ::testing::Values(
        Transcript{"pipelined_delivery",
                   "EHLO mx.leverancier.nl\r\nMAIL FROM:<factuur@leverancier.nl> SIZE=100 BODY=8BITMIME\r\nRCPT TO:<" + kFacturen +
                       ">\r\nRCPT TO:<onbekend@ontvang.coop.nl>\r\nDATA\r\nSubject: nota\r\n\r\n..punt\r\nregel\r\n.\r\nQUIT\r\n",
                   kGreeting + kEhlo + "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 <onbekend@ontvang.coop.nl>: Recipient address rejected: User unknown\r\n"
                       "354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued as 1\r\n221 2.0.0 Bye\r\n",
                   1, "Subject: nota\r\n\r\n.punt\r\nregel\r\n"},
        Transcript{"bare_lf_end_of_data_is_not_an_end",
                   "EHLO x\r\nMAIL FROM:<a@b.nl>\r\nRCPT TO:<" + kFacturen +
                       ">\r\nDATA\r\nSubject: een\r\n\r\ntekst\n.\nMAIL FROM:<evil@b.nl>\r\nRCPT TO:<ander@ontvang.coop.nl>\r\nDATA\r\nnep\r\n.\r\nQUIT\r\n",
                   kGreeting + kEhlo + "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
                       "554 5.6.0 Message contains a bare CR or LF; refused (lines must end with CRLF)\r\n221 2.0.0 Bye\r\n",
                   0},
        Transcript{"lf_dot_crlf_smuggling",
                   "EHLO x\r\nMAIL FROM:<a@b.nl>\r\nRCPT TO:<" + kFacturen +
                       ">\r\nDATA\r\ntekst\n.\r\nMAIL FROM:<evil@b.nl>\r\nRCPT TO:<ander@ontvang.coop.nl>\r\nDATA\r\nnep\r\n.\r\nQUIT\r\n",
                   kGreeting + kEhlo + "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
                       "554 5.6.0 Message contains a bare CR or LF; refused (lines must end with CRLF)\r\n221 2.0.0 Bye\r\n",
                   0},
        Transcript{"bare_cr_smuggling",
                   "EHLO x\r\nMAIL FROM:<a@b.nl>\r\nRCPT TO:<" + kFacturen + ">\r\nDATA\r\ntekst\r.\rMAIL FROM:<evil@b.nl>\r\n.\r\nQUIT\r\n",
                   kGreeting + kEhlo + "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
                       "554 5.6.0 Message contains a bare CR or LF; refused (lines must end with CRLF)\r\n221 2.0.0 Bye\r\n",
                   0},
        Transcript{"bare_lf_command",
                   "EHLO x\nNOOP\r\n", kGreeting + "500 5.5.2 Bare LF is not allowed: end lines with CRLF\r\n250 2.0.0 Ok\r\n", 0},
        Transcript{"sequence_errors",
                   "MAIL FROM:<a@b.nl>\r\nHELO x\r\nRCPT TO:<" + kFacturen + ">\r\nDATA\r\nMAIL FROM:<a@b.nl>\r\nMAIL FROM:<a@b.nl>\r\nDATA\r\n"
                       "RSET\r\nDATA\r\nBDAT 10\r\nAUTH PLAIN\r\nXYZZY\r\n",
                   kGreeting + "503 5.5.1 Send EHLO or HELO first\r\n250 ontvang.coop.nl\r\n503 5.5.1 Need MAIL command\r\n"
                       "503 5.5.1 Need RCPT command\r\n250 2.1.0 Ok\r\n503 5.5.1 Nested MAIL command\r\n554 5.5.1 No valid recipients\r\n"
                       "250 2.0.0 Ok\r\n503 5.5.1 Need RCPT command\r\n502 5.5.1 BDAT is not offered by this server\r\n502 5.5.1 AUTH is not offered by this server\r\n"
                       "500 5.5.2 Command not recognized\r\n",
                   0},
        Transcript{"tls_only_address_and_deferral",
                   "EHLO x\r\nMAIL FROM:<a@b.nl>\r\nRCPT TO:<tls-only@ontvang.coop.nl>\r\nRCPT TO:<db-down@ontvang.coop.nl>\r\n",
                   kGreeting + kEhlo + "250 2.1.0 Ok\r\n530 5.7.0 <tls-only@ontvang.coop.nl>: Must issue a STARTTLS command first\r\n"
                       "451 4.3.0 <db-down@ontvang.coop.nl>: Temporary lookup failure, try again later\r\n",
                   0},
        Transcript{"utf8_needs_smtputf8",
                   "EHLO x\r\nMAIL FROM:<jürgen@b.de>\r\nMAIL FROM:<jürgen@b.de> SMTPUTF8\r\nRSET\r\nMAIL FROM:<a@b.nl> SIZE=99999999999\r\n"
                       "MAIL FROM:<a@b.nl> FOO=1\r\n",
                   kGreeting + kEhlo + "553 5.6.7 A non-ASCII address needs SMTPUTF8\r\n250 2.1.0 Ok\r\n250 2.0.0 Ok\r\n"
                       "552 5.3.4 Message size exceeds fixed limit\r\n555 5.5.4 Unsupported MAIL parameter FOO=1\r\n",
                   0},
        Transcript{"null_sender_and_empty_message",
                   "HELO x\r\nMAIL FROM:<>\r\nRCPT TO:<" + kFacturen + ">\r\nDATA\r\n.\r\n",
                   kGreeting + "250 ontvang.coop.nl\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued as 1\r\n",
                   1}),
    [](const auto& info) { return info.param.name; });

TEST(SmtpSession, AfterStartTlsTheClientStartsOver) {
  Settings settings;
  settings.hostname = "ontvang.coop.nl";
  settings.tls_available = true;
  Session s(settings);
  s.greeting();
  s.feed("EHLO x\r\nSTARTTLS\r\nRSET\r\n");
  EXPECT_EQ(s.next()->kind, Event::Kind::reply);
  auto tls = s.next();
  ASSERT_EQ(tls->kind, Event::Kind::start_tls);
  EXPECT_FALSE(s.next()) << "nothing happens until the handshake is done";
  s.tls_started();
  EXPECT_FALSE(s.next()) << "the pipelined RSET was thrown away";
  s.feed("MAIL FROM:<a@b.nl>\r\nEHLO x\r\n");
  EXPECT_EQ(s.next()->text, "503 5.5.1 Send EHLO or HELO first\r\n");
  EXPECT_EQ(s.next()->text, kEhloTls) << "no STARTTLS offered twice";
  s.feed("MAIL FROM:<a@b.nl>\r\nRCPT TO:<x@y.nl>\r\n");
  EXPECT_EQ(s.next()->text, "250 2.1.0 Ok\r\n");
  auto rcpt = s.next();
  ASSERT_EQ(rcpt->kind, Event::Kind::check_rcpt);
  s.answer_rcpt(RcptVerdict::accept);
  EXPECT_EQ(s.next()->text, "250 2.1.5 Ok\r\n");
  s.feed("DATA\r\nx\r\n.\r\n");
  s.next();
  auto message = s.next();
  ASSERT_EQ(message->kind, Event::Kind::message);
  EXPECT_TRUE(message->envelope.tls);
  EXPECT_EQ(message->envelope.helo, "x");
}

TEST(SmtpSession, Limits) {
  Limits limits;
  limits.recipients = 2;
  limits.message = 100;
  limits.data_line = 50;
  std::vector<Delivered> delivered;
  const std::string rcpt = "RCPT TO:<" + kFacturen + ">\r\n";
  EXPECT_EQ(run("EHLO x\r\nMAIL FROM:<a@b.nl>\r\n" + rcpt + rcpt + rcpt, 1 << 20, &delivered, limits),
            kGreeting + std::string(kEhlo).replace(kEhlo.find("26214400"), 8, "100") +
                "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n452 4.5.3 Too many recipients\r\n");
  const std::string big(80, 'x');
  EXPECT_EQ(run("HELO x\r\nMAIL FROM:<a@b.nl>\r\n" + rcpt + "DATA\r\n" + big.substr(0, 40) + "\r\n" + big.substr(0, 40) + "\r\n" +
                    big.substr(0, 40) + "\r\n.\r\nNOOP\r\n",
                1 << 20, &delivered, limits),
            kGreeting + "250 ontvang.coop.nl\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
                        "552 5.3.4 Message size exceeds fixed limit\r\n250 2.0.0 Ok\r\n");
  EXPECT_EQ(run("HELO x\r\nMAIL FROM:<a@b.nl>\r\n" + rcpt + "DATA\r\n" + big + "\r\n.\r\n", 3, &delivered, limits),
            kGreeting + "250 ontvang.coop.nl\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
                        "554 5.6.0 Message has a line longer than 50 bytes; refused\r\n");
  EXPECT_TRUE(delivered.empty());
  // Ten errors: the connection is closed.
  std::string junk;
  for (int i = 0; i < 12; ++i) junk += "XYZZY\r\n";
  const std::string out = run(junk, 1 << 20, &delivered);
  EXPECT_NE(out.find("421 4.7.0 ontvang.coop.nl Too many errors"), std::string::npos) << out;
  EXPECT_EQ(out.find("421"), out.rfind("421"));
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1 + 9 + 1) << out;
  // A command line that never ends.
  EXPECT_EQ(run(std::string(600, 'A'), 1 << 20, &delivered), kGreeting + "500 5.5.2 Line too long, closing the connection\r\n");
}

// The transcript files the daemon test replays over loopback, replayed here against the session
// alone: every reply but the verdict at the end of DATA is the session's own; that verdict comes
// from the daemon's policy, so here it is answered with the transcript's own line. The client's
// bytes arrive at once and one byte at a time.
TEST(SmtpSessionTranscriptFiles, RepliesMatchHoweverTheBytesArrive) {
  const std::map<std::string, std::string> vars = {{"{receiver}", "r-abcdefghijkl@ontvang.mailgate.test"},
                                                   {"{tls_only}", "t-abcdefghijkl@ontvang.mailgate.test"},
                                                   {"{inactive}", "i-abcdefghijkl@ontvang.mailgate.test"}};
  const auto files = test::smtp_transcripts();
  ASSERT_GE(files.size(), 8u);
  for (const auto& file : files)
    for (std::size_t chunk : {std::size_t(1), std::size_t(1) << 20}) {
      const auto steps = test::load_transcript(file, vars);
      Settings settings;
      settings.hostname = "mx.mailgate.test";
      settings.tls_available = true;
      settings.limits.message = 200000;
      Session session(settings);
      std::vector<std::string> lines;  // what the server wrote, line by line; "<closed>" at a close
      auto write = [&](const std::string& text) {
        for (std::size_t at = 0; at < text.size();) {
          const auto eol = text.find("\r\n", at);
          lines.push_back(text.substr(at, eol - at));
          at = eol + 2;
        }
      };
      write(session.greeting().text);
      std::size_t expected = 0;  // the next S: step to compare
      auto next_expected = [&](std::size_t from) {
        while (from < steps.size() && steps[from].client) ++from;
        return from;
      };
      bool closed = false;
      auto drain = [&] {
        while (auto e = session.next()) {
          switch (e->kind) {
            case Event::Kind::reply: write(e->text); break;
            case Event::Kind::start_tls: write(e->text); session.tls_started(); break;
            case Event::Kind::close:
              write(e->text);
              lines.push_back("<closed>");
              closed = true;
              return;
            case Event::Kind::check_rcpt:
              session.answer_rcpt(e->address.rfind("r-", 0) == 0 || e->address.rfind("t-", 0) == 0 ? RcptVerdict::accept
                                                                                                 : RcptVerdict::unknown);
              break;
            case Event::Kind::message: {
              // The verdict is the daemon's: take the transcript's line for it.
              std::size_t at = next_expected(0);
              for (std::size_t seen = 0; at < steps.size() && seen < lines.size(); ++seen) at = next_expected(at + 1);
              const std::string verdict = at < steps.size() ? steps[at].text : "451 4.3.0 none";
              session.answer_message(std::stoi(verdict.substr(0, 3)), verdict.substr(4, verdict.find(' ', 4) - 4),
                                     verdict.substr(verdict.find(' ', 4) + 1));
              break;
            }
          }
        }
      };
      for (const auto& step : steps) {
        if (!step.client || closed) continue;
        for (std::size_t at = 0; at < step.text.size() && !closed; at += chunk) {
          session.feed(std::string_view(step.text).substr(at, chunk));
          drain();
        }
      }
      std::string log;
      for (std::size_t i = next_expected(0); i < steps.size(); i = next_expected(i + 1), ++expected) {
        const std::string got = expected < lines.size() ? lines[expected] : "<nothing>";
        log += "S: " + got + (test::transcript_line_matches(steps[i].text, got) ? "\n" : "   <- expected " + steps[i].text + "\n");
      }
      EXPECT_EQ(log.find("<- expected"), std::string::npos) << file.filename() << " chunk " << chunk << "\n" << log;
    }
}

}  // namespace
}  // namespace mailgate::smtpd
