// protocol/compose: what we send reads back (protocol/mime) as what was asked, headers cannot be
// injected, Bcc never shows, and every line is CRLF and 7-bit.
#include <gtest/gtest.h>

#include "protocol/compose.hpp"
#include "protocol/mime.hpp"

namespace mailgate {
namespace {

OutgoingMessage sample() {
  OutgoingMessage m;
  m.from = {"Coöperatie \"Zon\" Utrecht", "info@coop.nl"};
  m.reply_to = MailAddress{"Backoffice", "backoffice@coop.nl"};
  m.to = {{"Jan de Vries", "jan@example.nl"}};
  m.cc = {{"", "piet@example.nl"}};
  m.subject = "Factuur € 12 — juli";
  m.text_body = "Beste Jan,\n\nZie de bijlage.\n.Punt aan het begin\n";
  m.html_body = "<p>Beste Jan,</p><p>Zie de bijlage: €&nbsp;12.</p>";
  m.attachments = {{"factuur 12 – juli.pdf", "application/pdf", std::string("%PDF-1.4\n\x00\xff binary", 19)}};
  m.message_id = "outbox-42.abc@coop.nl";
  m.date = 1795000000;
  m.extra_headers = {{"Auto-Submitted", "auto-generated"}};
  return m;
}

TEST(Compose, ReadsBackAsAsked) {
  const std::string raw = compose_message(sample());
  const ParsedMessage p = parse_message(raw);
  EXPECT_TRUE(p.warnings.empty()) << ::testing::PrintToString(p.warnings);
  ASSERT_EQ(p.from.size(), 1u);
  EXPECT_EQ(p.from[0].name, "Coöperatie \"Zon\" Utrecht");
  EXPECT_EQ(p.from[0].address, "info@coop.nl");
  ASSERT_EQ(p.reply_to.size(), 1u);
  EXPECT_EQ(p.reply_to[0].address, "backoffice@coop.nl");
  ASSERT_EQ(p.to.size(), 1u);
  EXPECT_EQ(p.to[0].name, "Jan de Vries");
  ASSERT_EQ(p.cc.size(), 1u);
  EXPECT_EQ(p.subject, "Factuur € 12 — juli");
  EXPECT_EQ(p.message_id, "outbox-42.abc@coop.nl");
  EXPECT_EQ(p.date, 1795000000);
  EXPECT_NE(p.text_body.find(".Punt aan het begin"), std::string::npos);
  EXPECT_NE(p.html_body.find("€&nbsp;12"), std::string::npos);
  ASSERT_EQ(p.attachments.size(), 1u);
  EXPECT_EQ(p.attachments[0].filename, "factuur 12 – juli.pdf");
  EXPECT_EQ(p.attachments[0].content_type, "application/pdf");
  EXPECT_EQ(p.attachments[0].data, std::string("%PDF-1.4\n\x00\xff binary", 19));
  EXPECT_TRUE(p.auto_submitted);
}

TEST(Compose, CrlfAndSevenBitEverywhere) {
  const std::string raw = compose_message(sample());
  for (std::size_t i = 0; i < raw.size(); ++i) {
    ASSERT_LT(static_cast<unsigned char>(raw[i]), 0x80) << "8-bit byte at " << i;
    if (raw[i] == '\n') {
      ASSERT_TRUE(i > 0 && raw[i - 1] == '\r') << "bare LF at " << i;
    }
    if (raw[i] == '\r') {
      ASSERT_TRUE(i + 1 < raw.size() && raw[i + 1] == '\n') << "bare CR at " << i;
    }
  }
  EXPECT_NE(raw.find("multipart/alternative"), std::string::npos);
  EXPECT_NE(raw.find("multipart/mixed"), std::string::npos);
}

TEST(Compose, TheSameMessageComposesToTheSameBytes) {
  // The outbox composes a row again for each attempt instead of keeping its bytes.
  const std::string once = compose_message(sample()), again = compose_message(sample());
  EXPECT_EQ(once, again);
  ASSERT_NE(once.find("multipart/mixed"), std::string::npos);
  ASSERT_NE(once.find("multipart/alternative"), std::string::npos);
  OutgoingMessage other = sample();
  other.message_id = "outbox-43.abc@coop.nl";
  const std::string third = compose_message(other);
  const auto boundary = [](const std::string& raw) {
    const auto at = raw.find("boundary=");
    return raw.substr(at, raw.find('\r', at) - at);
  };
  EXPECT_NE(boundary(once), boundary(third)) << "another message, other boundaries";
}

// Text parts: plain ASCII goes as it is (7bit, found without GMime's analysis); anything else is
// encoded as GMime judges, except that what SMTP cannot carry as it is (NUL, bare CR, lines over
// 998 octets, which GMime left 7bit) is quoted-printable. (Both ways gave byte-identical output
// for the 7bit bodies when the shortcut was written.)
struct TextCase {
  std::string body;
  std::string encoding;
};

TEST(Compose, TextPartsAreSentAsTheyAreOnlyWhenThatIsSafe) {
  const std::vector<TextCase> cases = {
      {"Beste Jan,\n\nZie de bijlage.\n.Punt aan het begin\n", "7bit"},
      {"trailing space \nand tab\t\n", "7bit"},
      {"line\r\nwith crlf\r\n", "7bit"},
      {std::string(998, 'b') + "\n", "7bit"},
      {std::string(999, 'c') + "\n", "quoted-printable"},   // too long for a line of SMTP
      {"From the start\n", "quoted-printable"},              // mbox's From_ line
      {"een\nFrom here\n", "quoted-printable"},
      {"bare\rcr\n", "quoted-printable"},
      {std::string("nul\0byte\n", 9), "quoted-printable"},
      {"euro \xe2\x82\xac\n", "base64"},                     // GMime's choice for this one
  };
  for (const auto& c : cases) {
    OutgoingMessage m = sample();
    m.html_body.clear();
    m.attachments.clear();
    m.text_body = c.body;
    const std::string raw = compose_message(m);
    EXPECT_NE(raw.find("Content-Transfer-Encoding: " + c.encoding + "\r\n"), std::string::npos) << c.body << "\n" << raw;
    EXPECT_NE(raw.find("charset=utf-8"), std::string::npos) << raw;
    for (std::size_t i = 0; i < raw.size(); ++i)
      ASSERT_LT(static_cast<unsigned char>(raw[i]), 0x80) << "8-bit in " << c.body;
    if (c.encoding == "7bit") {
      std::string crlf;
      for (std::size_t i = 0; i < c.body.size(); ++i) {
        if (c.body[i] == '\n' && (i == 0 || c.body[i - 1] != '\r')) crlf += '\r';
        crlf += c.body[i];
      }
      EXPECT_NE(raw.find("\r\n\r\n" + crlf), std::string::npos) << "the body as it is, in CRLF lines";
    }
  }
}

TEST(Compose, TextOnlyIsASinglePart) {
  OutgoingMessage m = sample();
  m.html_body.clear();
  m.attachments.clear();
  const std::string raw = compose_message(m);
  EXPECT_EQ(raw.find("multipart"), std::string::npos);
  EXPECT_NE(raw.find("text/plain"), std::string::npos);
}

// compose_message() writes the common case itself: the same bytes as GMime's object tree.
struct DirectCase {
  const char* name;
  void (*apply)(OutgoingMessage&);
  bool direct;  // the direct writer covers it
};

class ComposeDirect : public ::testing::TestWithParam<DirectCase> {};

TEST_P(ComposeDirect, WritesWhatGMimeWrites) {
  OutgoingMessage m = sample();
  m.attachments.clear();
  m.text_body = "Beste Jan,\n\nZie de bijlage.\n.Punt aan het begin\n";
  m.html_body = "<p>Beste Jan,</p>\n<p>Zie de bijlage: &euro;&nbsp;12.</p>";
  GetParam().apply(m);
  const auto direct = compose_message_direct(m);
  ASSERT_EQ(direct.has_value(), GetParam().direct);
  const std::string reference = compose_message_with_gmime(m);
  EXPECT_EQ(compose_message(m), reference);
  if (direct) {
    EXPECT_EQ(*direct, reference);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Table, ComposeDirect,
    ::testing::Values(
        DirectCase{"text_and_html", [](OutgoingMessage&) {}, true},
        DirectCase{"text_only", [](OutgoingMessage& m) { m.html_body.clear(); }, true},
        DirectCase{"text_no_newline", [](OutgoingMessage& m) { m.html_body.clear(); m.text_body = "a\nb"; }, true},
        DirectCase{"text_crlf_and_blank_lines", [](OutgoingMessage& m) { m.html_body = "x"; m.text_body = "a\r\nb\r\n\r\n\n"; }, true},
        DirectCase{"html_only", [](OutgoingMessage& m) { m.text_body.clear(); }, true},
        DirectCase{"html_only_no_newline", [](OutgoingMessage& m) { m.text_body.clear(); m.html_body = "<p>a</p>"; }, true},
        DirectCase{"empty_bodies", [](OutgoingMessage& m) { m.text_body.clear(); m.html_body.clear(); }, true},
        DirectCase{"long_lines", [](OutgoingMessage& m) { m.text_body = std::string(998, 'b') + "\n" + std::string(500, 'c'); }, true},
        DirectCase{"subject_spaces", [](OutgoingMessage& m) { m.subject = "  twee  spaties\tén tab  "; }, true},
        DirectCase{"subject_ascii", [](OutgoingMessage& m) { m.subject = "Nieuwsbrief december"; }, true},
        DirectCase{"subject_like_encoded_word", [](OutgoingMessage& m) { m.subject = "=?utf-8?q?boss=40trusted.nl?="; }, true},
        DirectCase{"subject_long_ascii", [](OutgoingMessage& m) { m.subject = std::string(60, 'a') + " " + std::string(30, 'b') + " " + std::string(100, 'c') + " d e"; }, true},
        DirectCase{"subject_long_unicode", [](OutgoingMessage& m) { m.subject = "Coöperatie € " + std::string(50, 'x') + " — Zon " + std::string(70, 'y') + " é"; }, true},
        DirectCase{"subject_empty", [](OutgoingMessage& m) { m.subject.clear(); }, true},
        DirectCase{"subject_not_utf8", [](OutgoingMessage& m) { m.subject = "caf\xe9 \xff"; }, true},
        DirectCase{"names", [](OutgoingMessage& m) {
                     m.from.name = "Info, \"de\" (Coöp) <x>";
                     m.to = {{"Ünïcode Naam", "jan@example.nl"}, {"", "b@example.nl"}, {"a.b@c.nl", "c@example.nl"}, {" spatie ", "d@example.nl"}};
                     for (int i = 0; i < 30; ++i) m.cc.push_back({"Lid " + std::to_string(i), "lid" + std::to_string(i) + "@example.nl"});
                     m.reply_to.reset();
                   }, true},
        DirectCase{"no_to", [](OutgoingMessage& m) { m.to.clear(); m.cc.clear(); }, true},
        DirectCase{"long_message_id", [](OutgoingMessage& m) { m.message_id = std::string(90, 'i') + "@" + std::string(40, 'd') + ".nl"; }, true},
        DirectCase{"extra_headers", [](OutgoingMessage& m) { m.extra_headers = {{"Auto-Submitted", "auto-replied"}, {"X-Mailgate", "één " + std::string(90, 'z')}}; }, true},
        DirectCase{"no_extra_headers", [](OutgoingMessage& m) { m.extra_headers.clear(); }, true},
        DirectCase{"utf8_text", [](OutgoingMessage& m) { m.text_body = "euro \xe2\x82\xac\n"; }, false},
        DirectCase{"from_line", [](OutgoingMessage& m) { m.html_body = "From the start\n"; }, false},
        DirectCase{"attachment", [](OutgoingMessage& m) { m.attachments = sample().attachments; }, false},
        DirectCase{"extra_header_gmime_orders", [](OutgoingMessage& m) { m.extra_headers = {{"Cc", "x@example.nl"}}; }, false}),
    [](const auto& info) { return info.param.name; });

// compose_and_parse() gives what parse_message() gives for the composed bytes, field by field,
// whether it read them back itself (text parts that went as they are) or had to parse them.
struct ParseCase {
  const char* name;
  void (*apply)(OutgoingMessage&);
  bool reparsed;  // the parser had to run
};

void expect_same_addresses(const std::vector<MailAddress>& a, const std::vector<MailAddress>& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].name, b[i].name) << what << "[" << i << "]";
    EXPECT_EQ(a[i].address, b[i].address) << what << "[" << i << "]";
  }
}

class ComposeAndParse : public ::testing::TestWithParam<ParseCase> {};

TEST_P(ComposeAndParse, GivesWhatTheParserGives) {
  OutgoingMessage m = sample();
  m.text_body = "Beste Jan,\n\nZie de bijlage.\n.Punt aan het begin\n";  // ASCII: it goes as it is
  m.html_body = "<p>Beste Jan,</p>\n<p>Zie de bijlage: &euro;&nbsp;12.</p>";
  GetParam().apply(m);
  const ComposedMessage c = compose_and_parse(m);
  EXPECT_EQ(c.raw, compose_message(m));
  EXPECT_EQ(c.reparsed, GetParam().reparsed);
  std::vector<std::optional<ContentSpan>> spans;
  const ParsedMessage p = parse_message(c.raw, spans);
  const ParsedMessage& q = c.parsed;
  EXPECT_TRUE(p.warnings.empty()) << ::testing::PrintToString(p.warnings);
  EXPECT_EQ(q.warnings, p.warnings);
  EXPECT_EQ(q.message_id, p.message_id);
  EXPECT_EQ(q.date, p.date);
  EXPECT_EQ(q.subject, p.subject);
  expect_same_addresses(q.from, p.from, "from");
  expect_same_addresses(q.sender, p.sender, "sender");
  expect_same_addresses(q.reply_to, p.reply_to, "reply_to");
  expect_same_addresses(q.to, p.to, "to");
  expect_same_addresses(q.cc, p.cc, "cc");
  EXPECT_EQ(q.text_body, p.text_body);
  EXPECT_EQ(q.html_body, p.html_body);
  EXPECT_EQ(q.sha256_hex, p.sha256_hex);
  EXPECT_EQ(q.auto_submitted, p.auto_submitted);
  ASSERT_EQ(q.attachments.size(), p.attachments.size());
  for (std::size_t i = 0; i < p.attachments.size(); ++i) {
    EXPECT_EQ(q.attachments[i].content_type, p.attachments[i].content_type) << i;
    EXPECT_EQ(q.attachments[i].filename, p.attachments[i].filename) << i;
    EXPECT_EQ(q.attachments[i].content_id, p.attachments[i].content_id) << i;
    EXPECT_EQ(q.attachments[i].inline_part, p.attachments[i].inline_part) << i;
    EXPECT_EQ(q.attachments[i].data, p.attachments[i].data) << i;
    EXPECT_EQ(q.attachments[i].sha256_hex, p.attachments[i].sha256_hex) << i;
  }
  ASSERT_EQ(c.spans.size(), spans.size());
  for (std::size_t i = 0; i < spans.size(); ++i) {
    ASSERT_EQ(c.spans[i].has_value(), spans[i].has_value()) << i;
    if (!spans[i]) continue;
    EXPECT_EQ(c.spans[i]->offset, spans[i]->offset) << i;
    EXPECT_EQ(c.spans[i]->length, spans[i]->length) << i;
    EXPECT_EQ(c.spans[i]->base64, spans[i]->base64) << i;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Table, ComposeAndParse,
    ::testing::Values(
        ParseCase{"sample", [](OutgoingMessage&) {}, false},
        ParseCase{"text_only_no_newline", [](OutgoingMessage& m) { m.html_body.clear(); m.attachments.clear(); m.text_body = "a\nb"; }, false},
        ParseCase{"text_only_crlf", [](OutgoingMessage& m) { m.html_body.clear(); m.attachments.clear(); m.text_body = "a\r\nb\r\n\r\n"; }, false},
        ParseCase{"html_only", [](OutgoingMessage& m) { m.text_body.clear(); }, false},
        ParseCase{"nothing", [](OutgoingMessage& m) { m.text_body.clear(); m.html_body.clear(); }, false},
        ParseCase{"subject_spaces", [](OutgoingMessage& m) { m.subject = "  twee  spaties\tén tab  "; }, false},
        ParseCase{"subject_ascii_spaces", [](OutgoingMessage& m) { m.subject = "  lead  two  spaces trailing "; }, false},
        ParseCase{"subject_like_encoded_word", [](OutgoingMessage& m) { m.subject = "=?utf-8?q?boss=40trusted.nl?="; }, false},
        ParseCase{"subject_long", [](OutgoingMessage& m) { m.subject = std::string(200, 'x') + " " + std::string(30, 'y') + " Coöperatie " + std::string(90, 'z'); }, false},
        ParseCase{"subject_empty", [](OutgoingMessage& m) { m.subject.clear(); }, false},
        ParseCase{"subject_not_utf8", [](OutgoingMessage& m) { m.subject = "caf\xe9 \xff"; }, false},
        ParseCase{"names", [](OutgoingMessage& m) {
                    m.from.name = "Info, \"de\" (Coöp) <x>";
                    m.to = {{"Ünïcode Naam", "jan@example.nl"}, {"", "b@example.nl"}, {"a.b@c.nl", "c@example.nl"}, {" spatie ", "d@example.nl"}};
                    for (int i = 0; i < 30; ++i) m.cc.push_back({"Lid " + std::to_string(i), "lid" + std::to_string(i) + "@example.nl"});
                    m.reply_to.reset();
                  }, false},
        ParseCase{"filenames", [](OutgoingMessage& m) {
                    m.attachments = {{"factuur 12 – juli.pdf", "Application/PDF; name=x", "a"},
                                     {std::string(120, 'f') + ".pdf", "application/pdf", ""},
                                     {"a \"quoted\"; b=c.txt", "text/plain", "hello\n"},
                                     {" leading.txt", "text/plain; charset=iso-8859-1", std::string(3000, '\xff')},
                                     {"", "application/octet-stream", "no name"}};
                  }, false},
        ParseCase{"filename_like_encoded_word", [](OutgoingMessage& m) { m.attachments[0].filename = "=?utf-8?q?x?=.pdf"; }, true},
        ParseCase{"html_only_no_newline", [](OutgoingMessage& m) { m.text_body.clear(); m.attachments.clear(); m.html_body = "<p>a</p>"; }, false},
        ParseCase{"nothing_one_part", [](OutgoingMessage& m) { m.text_body.clear(); m.html_body.clear(); m.attachments.clear(); }, false},
        ParseCase{"auto_submitted_no", [](OutgoingMessage& m) { m.extra_headers = {{"Auto-Submitted", "no"}}; }, false},
        ParseCase{"no_extra_headers", [](OutgoingMessage& m) { m.extra_headers.clear(); }, false},
        ParseCase{"utf8_text", [](OutgoingMessage& m) { m.text_body = "euro \xe2\x82\xac\n"; }, true},
        ParseCase{"from_line", [](OutgoingMessage& m) { m.html_body = "From the start\n"; }, true},
        ParseCase{"attached_message", [](OutgoingMessage& m) {
                    m.attachments.push_back({"fwd.eml", "message/rfc822", "Subject: fwd\r\n\r\nbody\r\n"});
                  }, true}),
    [](const auto& info) { return info.param.name; });

struct Injection {
  const char* name;
  void (*apply)(OutgoingMessage&);
  std::string field;
};

class ComposeRefuses : public ::testing::TestWithParam<Injection> {};

TEST_P(ComposeRefuses, HeaderInjection) {
  OutgoingMessage m = sample();
  GetParam().apply(m);
  try {
    compose_message(m);
    FAIL() << "accepted";
  } catch (const ComposeError& e) {
    EXPECT_EQ(e.field, GetParam().field) << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(
    Table, ComposeRefuses,
    ::testing::Values(Injection{"subject_lf", [](OutgoingMessage& m) { m.subject = "Hoi\nBcc: x@evil.nl"; }, "subject"},
                      Injection{"subject_cr", [](OutgoingMessage& m) { m.subject = "Hoi\rBcc: x@evil.nl"; }, "subject"},
                      Injection{"from_name", [](OutgoingMessage& m) { m.from.name = "Info\r\nBcc: x@evil.nl"; }, "from"},
                      Injection{"to_address", [](OutgoingMessage& m) { m.to.push_back({"", "a@b.nl>\r\nBcc: <x@evil.nl"}); }, "to[1]"},
                      Injection{"cc_not_address", [](OutgoingMessage& m) { m.cc[0].address = "piet"; }, "cc[0]"},
                      Injection{"reply_to", [](OutgoingMessage& m) { m.reply_to->name = "x\n"; }, "reply_to"},
                      Injection{"filename", [](OutgoingMessage& m) { m.attachments[0].filename = "a\r\n.pdf"; }, "attachments[0].filename"},
                      Injection{"content_type", [](OutgoingMessage& m) { m.attachments[0].content_type = "pdf"; }, "attachments[0].content_type"},
                      Injection{"message_id", [](OutgoingMessage& m) { m.message_id = "<a@b>"; }, "message_id"}),
    [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace mailgate
