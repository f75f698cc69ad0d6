// protocol/mime: real-world message shapes parsed into stored fields; broken input never throws.
#include <gtest/gtest.h>

#include "protocol/mime.hpp"
#include "util/crypto.hpp"

namespace mailgate {
namespace {

// Strict UTF-8 validation (what PostgreSQL will demand of every text column).
bool utf8_valid(const std::string& s) {
  for (std::size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    int extra = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : -1;
    if (extra < 0 || i + extra >= s.size() + (extra == 0)) return false;
    for (int k = 1; k <= extra; ++k)
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 2) return false;
    i += extra + 1;
  }
  return true;
}

TEST(Mime, LatinOneSubjectAndBodyBecomeUtf8) {
  const std::string raw =
      "Message-ID: <abc@example.nl>\r\nDate: Tue, 24 Nov 2026 10:00:00 +0100\r\n"
      "From: =?iso-8859-1?q?Jos=E9_M=FCller?= <jose@example.nl>\r\nTo: info@coop.nl\r\n"
      "Subject: =?iso-8859-1?q?Caf=E9_factuur?=\r\nMIME-Version: 1.0\r\n"
      "Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
      "Bedankt voor het caf\xe9 bezoek.\r\n";
  auto m = parse_message(raw);
  EXPECT_EQ(m.message_id, "abc@example.nl");
  EXPECT_EQ(m.subject, "Café factuur");
  ASSERT_EQ(m.from.size(), 1u);
  EXPECT_EQ(m.from[0].name, "José Müller");
  EXPECT_EQ(m.from[0].address, "jose@example.nl");
  EXPECT_EQ(m.text_body, "Bedankt voor het café bezoek.\r\n");
  EXPECT_EQ(m.date, 1795510800);
  EXPECT_EQ(m.sha256_hex, sha256_hex(raw));
  EXPECT_TRUE(m.warnings.empty()) << m.warnings.front();
}

TEST(Mime, AlternativeWithAttachmentsAndRfc2231Name) {
  const std::string raw =
      "From: Leverancier <facturen@leverancier.nl>\r\nTo: Coop <inkoop@coop.nl>, team: a@coop.nl, b@coop.nl;\r\n"
      "Cc: undisclosed-recipients:;\r\nReply-To: administratie@leverancier.nl\r\nSubject: Factuur 2026-001\r\n"
      "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n"
      "--outer\r\nContent-Type: multipart/alternative; boundary=\"inner\"\r\n\r\n"
      "--inner\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
      "SGllcmJpaiBkZSBmYWN0dXVyIOKCrCAxMiw1MA==\r\n"
      "--inner\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Hierbij de factuur</p>\r\n--inner--\r\n"
      "--outer\r\nContent-Type: application/pdf\r\n"
      "Content-Disposition: attachment; filename*=utf-8''factuur%20%E2%82%AC%2012.pdf\r\n"
      "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n"
      "--outer\r\nContent-Type: message/rfc822\r\n\r\nFrom: x@y.nl\r\nSubject: doorgestuurd\r\n\r\nbinnen\r\n"
      "--outer--\r\n";
  auto m = parse_message(raw);
  EXPECT_EQ(m.text_body, "Hierbij de factuur € 12,50");
  EXPECT_EQ(m.html_body, "<p>Hierbij de factuur</p>");
  ASSERT_EQ(m.to.size(), 3u) << "group members are addresses too";
  EXPECT_EQ(m.to[2].address, "b@coop.nl");
  EXPECT_TRUE(m.cc.empty());
  ASSERT_EQ(m.attachments.size(), 2u);
  EXPECT_EQ(m.attachments[0].filename, "factuur € 12.pdf");
  EXPECT_EQ(m.attachments[0].content_type, "application/pdf");
  EXPECT_EQ(m.attachments[0].data, "%PDF-1.4\n");
  EXPECT_EQ(m.attachments[0].sha256_hex, sha256_hex("%PDF-1.4\n"));
  EXPECT_EQ(m.attachments[1].content_type, "message/rfc822");
  EXPECT_EQ(m.attachments[1].filename, "doorgestuurd.eml");
  EXPECT_EQ(m.linkable_addresses(),
            (std::vector<std::string>{"facturen@leverancier.nl", "inkoop@coop.nl", "a@coop.nl", "b@coop.nl", "administratie@leverancier.nl"}));
}

TEST(Mime, DisplayNameThatImitatesAnAddressIsJustAName) {
  auto m = parse_message("From: \"=?utf-8?q?boss=40trusted.nl?=\" <x@evil.example>\r\nSubject: pay\r\n\r\nnow\r\n");
  ASSERT_EQ(m.from.size(), 1u);
  EXPECT_EQ(m.from[0].name, "boss@trusted.nl");
  EXPECT_EQ(m.from[0].address, "x@evil.example");
}

TEST(Mime, AutoSubmittedIsRecognised) {
  EXPECT_TRUE(parse_message("Auto-Submitted: auto-replied\r\n\r\nx").auto_submitted);
  EXPECT_FALSE(parse_message("Auto-Submitted: no\r\n\r\nx").auto_submitted);
  EXPECT_FALSE(parse_message("Subject: x\r\n\r\nx").auto_submitted);
}

TEST(Mime, BrokenInputNeverThrowsAndStaysUtf8) {
  const std::vector<std::string> inputs = {
      "",
      std::string("\0\1\2 not a message", 18),
      "Subject: \xff\xfe raw 8-bit\r\nFrom: <<<>>>\r\n\r\nbody \xc3\x28\r\n",
      "Content-Type: multipart/mixed\r\n\r\nno boundary at all\r\n",
      "Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain; charset=no-such-charset\r\n\r\n\xe9\xe9\r\n",
      "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not base64!!!\r\n",
  };
  for (const auto& raw : inputs) {
    ParsedMessage m;
    ASSERT_NO_THROW(m = parse_message(raw)) << raw;
    for (const std::string* s : {&m.subject, &m.text_body, &m.html_body})
      EXPECT_TRUE(utf8_valid(*s)) << raw;
    for (const auto& a : m.from) EXPECT_TRUE(utf8_valid(a.name));
  }
  EXPECT_FALSE(parse_message("Content-Type: multipart/mixed\r\n\r\nno boundary at all\r\n").warnings.empty());
}

}  // namespace
}  // namespace mailgate
