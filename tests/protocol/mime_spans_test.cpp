// protocol/mime: where attachments lie in the raw message. A span is offered only when decoding
// it gives exactly the attachment's bytes with any base64 decoder; one row per shape.
#include <gtest/gtest.h>

#include "protocol/mime.hpp"
#include "util/crypto.hpp"

namespace mailgate {
namespace {

std::string with_part(const std::string& headers, const std::string& body) {
  return "From: a@example.nl\r\nSubject: x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
         "--b\r\nContent-Type: text/plain\r\n\r\ntekst\r\n--b\r\n" + headers + "\r\n" + body + "\r\n--b--\r\n";
}

// What the span decodes to (base64 with line breaks and spaces skipped, as PostgreSQL's decode()).
std::string decode_span(const std::string& raw, const ContentSpan& s) {
  const std::string bytes = raw.substr(s.offset, s.length);
  if (!s.base64) return bytes;
  std::string compact;
  for (char c : bytes)
    if (c != '\r' && c != '\n' && c != ' ' && c != '\t') compact.push_back(c);
  return base64_decode(compact);
}

struct Row {
  const char* what;
  std::string headers, body;
  bool span;
  bool base64;
};

TEST(MimeSpans, OfferedOnlyWhenTheRawBytesDecodeExactly) {
  static const char kPdf[] = "%PDF-1.4\n\xe2\xe3\xcf\xd3 binary\x00\x01\xff";
  const std::string pdf(kPdf, sizeof kPdf - 1);
  const std::string b64 = base64_encode(pdf);
  const Row rows[] = {
      {"base64 in lines", "Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n",
       b64.substr(0, 8) + "\r\n" + b64.substr(8), true, true},
      {"base64 with one padding character", "Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n", base64_encode("ab"),
       true, true},
      {"base64 with two padding characters", "Content-Type: application/pdf\r\nContent-Transfer-Encoding: BASE64\r\n", base64_encode("a"),
       true, true},
      {"base64 with a stray character", "Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n",
       b64.substr(0, 8) + "!" + b64.substr(8), false, false},
      {"base64 with padding in the middle", "Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n",
       base64_encode("a") + base64_encode("b"), false, false},
      {"base64 cut short", "Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n", b64.substr(0, b64.size() - 1), false,
       false},
      {"unencoded", "Content-Type: text/csv\r\nContent-Disposition: attachment\r\n", "a;b\r\n1;2", true, false},
      {"8bit", "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: 8bit\r\n", "caf\xc3\xa9", true, false},
      {"quoted-printable", "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: quoted-printable\r\n", "caf=C3=A9",
       false, false},
      {"an attached message", "Content-Type: message/rfc822\r\n", "From: x@y.nl\r\nSubject: binnen\r\n\r\nbinnen", false, false},
  };
  for (const auto& row : rows) {
    const std::string raw = with_part(row.headers, row.body);
    std::vector<std::optional<ContentSpan>> spans;
    const auto m = parse_message(raw, spans);
    ASSERT_EQ(m.attachments.size(), 1u) << row.what;
    ASSERT_EQ(spans.size(), 1u) << row.what;
    EXPECT_EQ(spans[0].has_value(), row.span) << row.what;
    if (!spans[0]) continue;
    EXPECT_EQ(spans[0]->base64, row.base64) << row.what;
    EXPECT_EQ(decode_span(raw, *spans[0]), m.attachments[0].data) << row.what;
  }
}

TEST(MimeSpans, NestedPartsAndASinglePartMessage) {
  const std::string logo = base64_encode(std::string(3000, '\x89'));
  const std::string raw =
      "From: a@example.nl\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"out\"\r\n\r\n"
      "--out\r\nContent-Type: multipart/related; boundary=\"rel\"\r\n\r\n"
      "--rel\r\nContent-Type: text/html\r\n\r\n<img src=\"cid:l\">\r\n"
      "--rel\r\nContent-Type: image/png\r\nContent-ID: <l>\r\nContent-Transfer-Encoding: base64\r\n\r\n" + logo + "\r\n--rel--\r\n"
      "--out\r\nContent-Type: application/zip\r\nContent-Transfer-Encoding: base64\r\n\r\n" + base64_encode("PK zip") + "\r\n--out--\r\n";
  std::vector<std::optional<ContentSpan>> spans;
  auto m = parse_message(raw, spans);
  ASSERT_EQ(m.attachments.size(), 2u);
  ASSERT_EQ(spans.size(), 2u);
  for (std::size_t i = 0; i < 2; ++i) {
    ASSERT_TRUE(spans[i]) << i;
    EXPECT_EQ(decode_span(raw, *spans[i]), m.attachments[i].data) << i;
  }

  const std::string single = "From: a@example.nl\r\nMIME-Version: 1.0\r\nContent-Type: application/pdf\r\n"
                             "Content-Transfer-Encoding: base64\r\n\r\n" + base64_encode("%PDF alone") + "\r\n";
  m = parse_message(single, spans);
  ASSERT_EQ(m.attachments.size(), 1u);
  ASSERT_EQ(spans.size(), 1u);
  ASSERT_TRUE(spans[0]);
  EXPECT_EQ(decode_span(single, *spans[0]), "%PDF alone");

  m = parse_message(std::string("Content-Type: multipart/mixed\r\n\r\n\0\xff garbage", 41), spans);
  EXPECT_EQ(spans.size(), m.attachments.size()) << "broken input: one entry per attachment all the same";
}

}  // namespace
}  // namespace mailgate
