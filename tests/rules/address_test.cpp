// rules/address: one row per input, with the normal form or the reason it is refused.
#include <gtest/gtest.h>

#include "rules/address.hpp"

namespace mailgate {
namespace {

struct Row {
  const char* input;
  const char* normal;  // nullptr: refused
  const char* reason;  // expected reason when refused
};

class NormalizeEmail : public ::testing::TestWithParam<Row> {};

TEST_P(NormalizeEmail, Table) {
  const Row& row = GetParam();
  auto r = normalize_email(row.input);
  if (row.normal) {
    ASSERT_TRUE(std::holds_alternative<std::string>(r)) << row.input << ": " << std::get<AddressError>(r).reason;
    EXPECT_EQ(std::get<std::string>(r), row.normal);
  } else {
    ASSERT_TRUE(std::holds_alternative<AddressError>(r)) << row.input << " was accepted";
    EXPECT_EQ(std::get<AddressError>(r).reason, row.reason) << row.input;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Rows, NormalizeEmail,
    ::testing::Values(
        Row{"info@example.nl", "info@example.nl", nullptr},
        Row{"  Info@Example.NL \t", "Info@example.nl", nullptr},
        Row{"jan.de.vries+crm@sub.example.co.uk", "jan.de.vries+crm@sub.example.co.uk", nullptr},
        Row{"o'brien@example.ie", "o'brien@example.ie", nullptr},
        Row{"info@bücher.de", "info@xn--bcher-kva.de", nullptr},
        Row{"info@BÜCHER.de", "info@xn--bcher-kva.de", nullptr},
        Row{"josé@example.es", "josé@example.es", nullptr},
        Row{"info@example.nl.", "info@example.nl", nullptr},
        Row{"", nullptr, "the address is empty"},
        Row{"   ", nullptr, "the address is empty"},
        Row{"info.example.nl", nullptr, "the address has no @"},
        Row{"@example.nl", nullptr, "the part before the @ is empty"},
        Row{"info@", nullptr, "the domain is empty"},
        Row{"info@localhost", nullptr, "the domain needs at least two labels (example.nl)"},
        Row{"info@192.168.1.1", nullptr, "the domain is an IP address, not a name"},
        Row{"info@[192.168.1.1]", nullptr, "the domain contains a character that is not allowed"},
        Row{"in fo@example.nl", nullptr, "the part before the @ contains a character that is not allowed"},
        Row{"info@exa mple.nl", nullptr, "the domain contains a character that is not allowed"},
        Row{"info@example.nl\r\nBcc: x@evil.example", nullptr, "the address contains a line break"},
        Row{".info@example.nl", nullptr, "the part before the @ has a misplaced dot"},
        Row{"in..fo@example.nl", nullptr, "the part before the @ has a misplaced dot"},
        Row{"info@-example.nl", nullptr, "a domain label may not start or end with '-'"},
        Row{"info@example..nl", nullptr, "the domain has an empty or too long label"},
        Row{"a@b@example.nl", nullptr, "the part before the @ contains a character that is not allowed"},
        Row{"\"quoted\"@example.nl", nullptr, "the part before the @ contains a character that is not allowed"}));

TEST(NormalizeEmail, LengthLimits) {
  EXPECT_TRUE(std::holds_alternative<std::string>(normalize_email(std::string(64, 'a') + "@example.nl")));
  EXPECT_EQ(std::get<AddressError>(normalize_email(std::string(65, 'a') + "@example.nl")).reason,
            "the part before the @ is longer than 64 characters");
  EXPECT_EQ(std::get<AddressError>(normalize_email("a@" + std::string(64, 'b') + ".nl")).reason,
            "the domain has an empty or too long label");
}

TEST(NormalizeDomain, LeadingAtIsDropped) {
  EXPECT_EQ(std::get<std::string>(normalize_domain(" @Leverancier.NL ")), "leverancier.nl");
  EXPECT_EQ(std::get<std::string>(normalize_domain("straße.de")), "xn--strae-oqa.de") << "IDNA 2008, not transitional";
  EXPECT_TRUE(std::holds_alternative<AddressError>(normalize_domain("@")));
}

TEST(EmailMatchKey, CaseInsensitive) {
  EXPECT_EQ(email_match_key("Jan.Jansen@example.nl"), "jan.jansen@example.nl");
  EXPECT_EQ(email_domain("jan@example.nl"), "example.nl");
}

TEST(HeaderSafety, LineBreaks) {
  EXPECT_TRUE(has_line_break("a\r\nb"));
  EXPECT_TRUE(has_line_break("a\nb"));
  EXPECT_TRUE(has_line_break("a\rb"));
  EXPECT_TRUE(has_line_break(std::string_view("a\0b", 3)));
  EXPECT_FALSE(has_line_break("Weergavenaam <info@example.nl>"));
}

}  // namespace
}  // namespace mailgate
