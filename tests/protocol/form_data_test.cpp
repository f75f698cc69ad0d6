// protocol/form_data: multipart/form-data (RFC 7578) and urlencoded forms as webhooks post them;
// valid bodies field by field (byte-exact values), a table of invalid ones with the error each
// must give, limits, and every truncation of a valid body refused rather than half-read.
#include <gtest/gtest.h>

#include "protocol/form_data.hpp"

namespace mailgate::form {
namespace {

using Kind = FormError::Kind;

std::vector<Field> ok(std::string_view type, std::string_view body, Limits limits = {}) {
  auto r = parse_form(type, body, limits);
  if (auto* e = std::get_if<FormError>(&r)) {
    ADD_FAILURE() << "refused: " << e->message;
    return {};
  }
  return std::get<std::vector<Field>>(r);
}

const std::string kType = "multipart/form-data; boundary=XyZ";

TEST(FormData, MultipartFieldsAndFilesByteExact) {
  // Binary bytes, CRLFs and near-delimiters ("-XyZ", "--Xy") inside a value are kept as they are.
  static constexpr char kPdf[] = "%PDF-1.4\r\n\0\xff\r\n-XyZ\r\n--Xy\r\nXyZ--\r\n";
  const std::string pdf(kPdf, sizeof kPdf - 1);
  const std::string body =
      "preamble to ignore\r\n"
      "--XyZ\r\n"
      "Content-Disposition: form-data; name=\"recipient\"\r\n"
      "\r\n"
      "info@coop.test\r\n"
      "--XyZ  \r\n"  // transport padding
      "content-disposition: FORM-DATA; name=\"body-plain\"\r\n"
      "Content-Type: text/plain; charset=utf-8\r\n"
      "\r\n"
      "line 1\r\nline 2\r\n\r\n"
      "--XyZ\r\n"
      "Content-Disposition: form-data; name=\"attachment-1\"; filename=\"fac tuur \\\"1\\\".pdf\"\r\n"
      "Content-Type: application/pdf\r\n"
      "\r\n" +
      pdf +
      "\r\n--XyZ\r\n"
      "Content-Disposition: form-data; name=empty\r\n"
      "\r\n"
      "\r\n--XyZ--\r\n"
      "epilogue --XyZ\r\n";
  auto f = ok(kType, body);
  ASSERT_EQ(f.size(), 4u);
  EXPECT_EQ(f[0].name, "recipient");
  EXPECT_EQ(f[0].value, "info@coop.test");
  EXPECT_EQ(f[0].content_type, "text/plain");
  EXPECT_FALSE(f[0].is_file);
  EXPECT_EQ(f[1].name, "body-plain");
  EXPECT_EQ(f[1].value, "line 1\r\nline 2\r\n");
  EXPECT_EQ(f[1].content_type, "text/plain; charset=utf-8");
  EXPECT_EQ(f[2].name, "attachment-1");
  EXPECT_TRUE(f[2].is_file);
  EXPECT_EQ(f[2].filename, "fac tuur \"1\".pdf");
  EXPECT_EQ(f[2].content_type, "application/pdf");
  EXPECT_EQ(f[2].value, pdf);
  EXPECT_EQ(f[3].name, "empty");
  EXPECT_EQ(f[3].value, "");
  EXPECT_EQ(find_field(f, "attachment-1"), &f[2]);
  EXPECT_EQ(find_field(f, "nope"), nullptr);
}

TEST(FormData, BoundaryQuotedAtBodyStartAndFilenameStar) {
  const std::string type = "Multipart/Form-Data; charset=utf-8; boundary=\"a b:c\"";
  EXPECT_EQ(multipart_boundary(type), "a b:c");
  const std::string body =
      "--a b:c\r\n"
      "Content-Disposition: form-data; name=\"f\"; filename=\"x.txt\"; filename*=UTF-8''%C3%A9t%C3%A9.txt\r\n"
      "\r\n"
      "v\r\n--a b:c--";
  auto f = ok(type, body);
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0].filename, "\xc3\xa9t\xc3\xa9.txt");
  EXPECT_TRUE(f[0].is_file);
  EXPECT_EQ(f[0].value, "v");
}

TEST(FormData, EmptyFilenameIsStillAFilePart) {
  auto f = ok(kType, "--XyZ\r\nContent-Disposition: form-data; name=\"a\"; filename=\"\"\r\n\r\n\r\n--XyZ--\r\n");
  ASSERT_EQ(f.size(), 1u);
  EXPECT_TRUE(f[0].is_file);
  EXPECT_EQ(f[0].filename, "");
}

TEST(FormData, UrlEncoded) {
  auto f = ok("application/x-www-form-urlencoded; charset=UTF-8",
              "recipient=info%40coop.test&subject=Hallo+w%C3%A9reld&&empty=&flag&a%2Bb=1%2B1");
  ASSERT_EQ(f.size(), 5u);
  EXPECT_EQ(f[0].name, "recipient");
  EXPECT_EQ(f[0].value, "info@coop.test");
  EXPECT_EQ(f[1].value, "Hallo w\xc3\xa9reld");
  EXPECT_EQ(f[2].name, "empty");
  EXPECT_EQ(f[2].value, "");
  EXPECT_EQ(f[3].name, "flag");
  EXPECT_EQ(f[4].name, "a+b");
  EXPECT_EQ(f[4].value, "1+1");
  EXPECT_TRUE(ok("application/x-www-form-urlencoded", "").empty());
}

struct Bad {
  const char* name;
  std::string type, body;
  Kind kind;
  const char* message_part;
};

class FormDataInvalid : public ::testing::TestWithParam<Bad> {};

TEST_P(FormDataInvalid, RefusedWithItsError) {
  const auto& c = GetParam();
  Limits limits;
  limits.max_fields = 3;
  limits.max_bytes = 4096;
  auto r = parse_form(c.type, c.body, limits);
  ASSERT_TRUE(std::holds_alternative<FormError>(r)) << c.name;
  const auto& e = std::get<FormError>(r);
  EXPECT_EQ(static_cast<int>(e.kind), static_cast<int>(c.kind)) << c.name << ": " << e.message;
  EXPECT_NE(e.message.find(c.message_part), std::string::npos) << c.name << ": " << e.message;
}

const std::string kPart = "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nv\r\n";

INSTANTIATE_TEST_SUITE_P(
    Table, FormDataInvalid,
    ::testing::Values(
        Bad{"json", "application/json", "{}", Kind::unsupported_type, "Content-Type must be"},
        Bad{"no_type", "", "a=b", Kind::unsupported_type, "Content-Type must be"},
        Bad{"no_boundary", "multipart/form-data", kPart + "--XyZ--", Kind::unsupported_type, "boundary"},
        Bad{"boundary_too_long", "multipart/form-data; boundary=" + std::string(71, 'b'), "", Kind::unsupported_type, "boundary"},
        Bad{"boundary_bad_char", "multipart/form-data; boundary=\"a\\\"b\"", "", Kind::unsupported_type, "boundary"},
        Bad{"unclosed_quote", "multipart/form-data; boundary=\"XyZ", "", Kind::unsupported_type, "boundary"},
        Bad{"no_delimiter", kType, "just text", Kind::malformed, "no multipart delimiter"},
        Bad{"not_closed", kType, kPart, Kind::malformed, "not closed"},
        Bad{"truncated_value", kType, "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nval", Kind::malformed, "not closed"},
        Bad{"headers_never_end", kType, "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n", Kind::malformed, "headers do not end"},
        Bad{"no_disposition", kType, "--XyZ\r\nContent-Type: text/plain\r\n\r\nv\r\n--XyZ--", Kind::malformed, "no Content-Disposition"},
        Bad{"no_headers", kType, "--XyZ\r\n\r\nv\r\n--XyZ--", Kind::malformed, "no Content-Disposition"},
        Bad{"no_name", kType, "--XyZ\r\nContent-Disposition: form-data; filename=\"x\"\r\n\r\nv\r\n--XyZ--", Kind::malformed, "no name"},
        Bad{"attachment_disposition", kType, "--XyZ\r\nContent-Disposition: attachment; name=\"a\"\r\n\r\nv\r\n--XyZ--",
            Kind::malformed, "not form-data"},
        Bad{"header_without_colon", kType, "--XyZ\r\nContent-Disposition form-data\r\n\r\nv\r\n--XyZ--", Kind::malformed,
            "header line is malformed"},
        Bad{"bad_filename_star", kType,
            "--XyZ\r\nContent-Disposition: form-data; name=\"a\"; filename*=%41\r\n\r\nv\r\n--XyZ--", Kind::malformed, "filename*"},
        Bad{"garbage_after_delimiter", kType, kPart + "--XyZx\r\n", Kind::malformed, "not followed by CRLF"},
        Bad{"bare_lf", kType, "--XyZ\nContent-Disposition: form-data; name=\"a\"\n\nv\n--XyZ--", Kind::malformed, ""},
        Bad{"part_headers_too_long", kType,
            "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\nX-Long: " + std::string(8200, 'x') + "\r\n\r\nv\r\n--XyZ--",
            Kind::too_large, "larger than"},
        Bad{"too_many_parts", kType, kPart + kPart + kPart + kPart + "--XyZ--", Kind::too_many_fields, "more than 3"},
        Bad{"too_many_urlencoded", "application/x-www-form-urlencoded", "a=1&b=2&c=3&d=4", Kind::too_many_fields, "more than 3"},
        Bad{"bad_percent", "application/x-www-form-urlencoded", "a=%4", Kind::malformed, "percent-escape"},
        Bad{"bad_percent_hex", "application/x-www-form-urlencoded", "a=1&b=%zz", Kind::malformed, "field 2"},
        Bad{"too_large", "application/x-www-form-urlencoded", "a=" + std::string(5000, 'x'), Kind::too_large, "larger than 4096"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(FormData, LongPartHeadersAreMalformedUnderALargeBodyLimit) {
  const std::string body = "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\nX-Long: " + std::string(9000, 'x') + "\r\n\r\nv\r\n--XyZ--";
  auto r = parse_form(kType, body, Limits{});
  ASSERT_TRUE(std::holds_alternative<FormError>(r));
  EXPECT_EQ(std::get<FormError>(r).kind, Kind::malformed);
  EXPECT_NE(std::get<FormError>(r).message.find("8 KiB"), std::string::npos);
}

TEST(FormData, EveryTruncationOfAValidBodyIsRefusedNotHalfRead) {
  const std::string body =
      "--XyZ\r\nContent-Disposition: form-data; name=\"timestamp\"\r\n\r\n1700000000\r\n"
      "--XyZ\r\nContent-Disposition: form-data; name=\"body-mime\"; filename=\"m.eml\"\r\nContent-Type: message/rfc822\r\n\r\n"
      "From: a@b.test\r\n\r\nhello\r\n"
      "--XyZ--";
  ASSERT_EQ(ok(kType, body).size(), 2u);
  for (std::size_t n = 0; n < body.size(); ++n) {
    auto r = parse_form(kType, std::string_view(body).substr(0, n), Limits{});
    if (auto* fields = std::get_if<std::vector<Field>>(&r)) {
      ADD_FAILURE() << "a body truncated to " << n << " bytes was accepted with " << fields->size() << " fields";
    }
  }
}

TEST(FormData, LimitsAtTheirEdge) {
  Limits limits;
  limits.max_fields = 2;
  limits.max_bytes = 11;
  EXPECT_EQ(ok("application/x-www-form-urlencoded", "a=123&b=456", limits).size(), 2u);
}

}  // namespace
}  // namespace mailgate::form
