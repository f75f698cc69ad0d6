// protocol/smtp_wire: replies however the bytes arrive, EHLO keywords, commands, SASL, DATA.
#include <gtest/gtest.h>

#include "protocol/smtp_wire.hpp"
#include "util/crypto.hpp"

namespace mailgate::smtp {
namespace {

std::vector<Reply> parse_in_chunks(const std::string& bytes, std::size_t chunk) {
  ReplyParser p;
  std::vector<Reply> out;
  for (std::size_t at = 0; at < bytes.size(); at += chunk) {
    p.feed(std::string_view(bytes).substr(at, chunk));
    while (auto r = p.next()) out.push_back(*r);
  }
  EXPECT_TRUE(p.empty());
  return out;
}

struct ReplyCase {
  const char* name;
  std::string bytes;
  std::vector<std::string> texts;  // Reply::text() of each reply
};

class Replies : public ::testing::TestWithParam<ReplyCase> {};

TEST_P(Replies, SameRepliesHoweverTheBytesArrive) {
  for (std::size_t chunk : {1u, 2u, 7u, 4096u}) {
    std::vector<std::string> texts;
    for (const auto& r : parse_in_chunks(GetParam().bytes, chunk)) texts.push_back(r.text());
    EXPECT_EQ(texts, GetParam().texts) << "chunk " << chunk;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Table, Replies,
    ::testing::Values(ReplyCase{"greeting", "220 mx.example.nl ESMTP\r\n", {"220 mx.example.nl ESMTP"}},
                      ReplyCase{"multi_line", "250-mx.example.nl\r\n250-PIPELINING\r\n250 SIZE 1000\r\n",
                                {"250 mx.example.nl / PIPELINING / SIZE 1000"}},
                      ReplyCase{"pipelined_replies", "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n",
                                {"250 2.1.0 Ok", "250 2.1.5 Ok", "354 End data with <CR><LF>.<CR><LF>"}},
                      ReplyCase{"code_only", "250\r\n", {"250"}},
                      ReplyCase{"bare_hyphen_line", "250-\r\n250 x\r\n", {"250  / x"}}),
    [](const auto& info) { return info.param.name; });

struct BadReply {
  const char* name;
  std::string bytes;
};

class BadReplies : public ::testing::TestWithParam<BadReply> {};

TEST_P(BadReplies, AreProtocolErrors) {
  ReplyParser p;
  p.feed(GetParam().bytes);
  EXPECT_THROW(
      {
        while (p.next()) {
        }
      },
      ProtocolError);
}

INSTANTIATE_TEST_SUITE_P(Table, BadReplies,
                         ::testing::Values(BadReply{"bare_lf", "250 ok\n"}, BadReply{"no_code", "hello\r\n"},
                                           BadReply{"code_out_of_range", "199 what\r\n"}, BadReply{"bad_separator", "250+ok\r\n"},
                                           BadReply{"code_changes", "250-a\r\n251 b\r\n"},
                                           BadReply{"endless_line", std::string(5000, 'x')}),
                         [](const auto& info) { return info.param.name; });

TEST(SmtpReply, ClassesAndEnhancedCode) {
  ReplyParser p;
  p.feed("550 5.1.1 <x@example.nl>: Recipient address rejected\r\n451 4.3.0 try later\r\n221 bye\r\n");
  auto a = p.next().value(), b = p.next().value(), c = p.next().value();
  EXPECT_TRUE(a.permanent());
  EXPECT_EQ(a.enhanced(), "5.1.1");
  EXPECT_TRUE(b.transient());
  EXPECT_EQ(b.enhanced(), "4.3.0");
  EXPECT_TRUE(c.positive());
  EXPECT_EQ(c.enhanced(), "");
}

TEST(SmtpEhlo, Keywords) {
  ReplyParser p;
  p.feed("250-mx.example.nl Hello\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-STARTTLS\r\n250-AUTH PLAIN login XOAUTH2\r\n"
         "250-AUTH=LOGIN\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n");
  auto caps = parse_ehlo(p.next().value());
  EXPECT_TRUE(caps.pipelining && caps.starttls && caps.enhanced_status && caps.eightbitmime && caps.smtputf8 && caps.chunking);
  EXPECT_EQ(caps.size, 10240000u);
  EXPECT_EQ(caps.auth, (std::set<std::string>{"PLAIN", "LOGIN", "XOAUTH2"}));

  p.feed("250-mx\r\n250 SIZE\r\n");
  auto bare = parse_ehlo(p.next().value());
  EXPECT_EQ(bare.size, 0u) << "SIZE without a number: announced, no limit";
  EXPECT_FALSE(bare.starttls);
  EXPECT_TRUE(bare.auth.empty());
}

TEST(SmtpCommands, EnvelopeAndParameters) {
  Capabilities caps;
  EXPECT_EQ(mail_from("info@coop.nl", 1234, caps, true, false), "MAIL FROM:<info@coop.nl>\r\n");
  caps.size = 0;
  caps.eightbitmime = true;
  caps.smtputf8 = true;
  EXPECT_EQ(mail_from("info@coop.nl", 1234, caps, true, true), "MAIL FROM:<info@coop.nl> SIZE=1234 BODY=8BITMIME SMTPUTF8\r\n");
  EXPECT_EQ(mail_from("", 10, caps, false, false), "MAIL FROM:<> SIZE=10\r\n") << "the null reverse-path of bounces";
  EXPECT_EQ(rcpt_to("jan@example.nl"), "RCPT TO:<jan@example.nl>\r\n");
  for (const char* bad : {"jan@example.nl>\r\nRCPT TO:<evil@x.nl", "jan@example.nl\n", "jan @example.nl", "jan<@example.nl", "jan"})
    EXPECT_THROW(rcpt_to(bad), std::invalid_argument) << bad;
  EXPECT_THROW(rcpt_to(""), std::invalid_argument);
}

TEST(SmtpSasl, InitialResponses) {
  EXPECT_EQ(base64_decode(sasl_plain("info@coop.nl", "p\"a s\\é")), std::string(1, '\0') + "info@coop.nl" + std::string(1, '\0') + "p\"a s\\é");
  EXPECT_EQ(base64_decode(sasl_xoauth2("info@coop.nl", "tok")), "user=info@coop.nl\x01" "auth=Bearer tok\x01\x01");
}

struct StuffCase {
  const char* name;
  std::string in, out;
};

class DotStuffing : public ::testing::TestWithParam<StuffCase> {};

TEST_P(DotStuffing, Table) { EXPECT_EQ(dot_stuff(GetParam().in), GetParam().out); }

INSTANTIATE_TEST_SUITE_P(
    Table, DotStuffing,
    ::testing::Values(StuffCase{"plain", "a\r\nb\r\n", "a\r\nb\r\n.\r\n"},
                      StuffCase{"no_final_crlf", "a\r\nb", "a\r\nb\r\n.\r\n"},
                      StuffCase{"leading_dots", ".a\r\n..b\r\nc.\r\n", "..a\r\n...b\r\nc.\r\n.\r\n"},
                      StuffCase{"lone_dot_line", "a\r\n.\r\nb\r\n", "a\r\n..\r\nb\r\n.\r\n"},
                      StuffCase{"bare_lf_smuggling", "a\n.\nMAIL FROM:<x>\n", "a\r\n..\r\nMAIL FROM:<x>\r\n.\r\n"},
                      StuffCase{"bare_cr_smuggling", "a\r.\rb", "a\r\n..\r\nb\r\n.\r\n"},
                      StuffCase{"empty", "", ".\r\n"},
                      StuffCase{"first_line_dot", ".", "..\r\n.\r\n"},
                      StuffCase{"final_bare_lf", "a\n", "a\r\n.\r\n"},
                      StuffCase{"cr_then_crlf", "a\r\r\nb", "a\r\n\r\nb\r\n.\r\n"},
                      StuffCase{"empty_lines", "\n\n.", "\r\n\r\n..\r\n.\r\n"},
                      StuffCase{"final_bare_cr", "a\r", "a\r\n.\r\n"}),
    [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace mailgate::smtp
