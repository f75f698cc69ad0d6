// rules/templates: one row per template body, with the merge fields it uses or the error it
// must give; rendering rows per output format; every field the seed names is known.
#include <gtest/gtest.h>

#include "rules/templates.hpp"

namespace mailgate {
namespace {

struct ParseRow {
  const char* body;
  std::vector<std::string> fields;  // when accepted
  const char* error = nullptr;      // expected message when refused
  const char* merge_field = "";     // the unknown field named by the error
};

class TemplateParse : public ::testing::TestWithParam<ParseRow> {};

TEST_P(TemplateParse, Table) {
  const ParseRow& row = GetParam();
  auto r = template_parse(row.body);
  if (!row.error) {
    ASSERT_TRUE(std::holds_alternative<ParsedTemplate>(r)) << row.body << ": " << std::get<TemplateError>(r).message;
    EXPECT_EQ(std::get<ParsedTemplate>(r).fields(), row.fields) << row.body;
  } else {
    ASSERT_TRUE(std::holds_alternative<TemplateError>(r)) << row.body << " was accepted";
    const auto& e = std::get<TemplateError>(r);
    EXPECT_EQ(e.message, row.error) << row.body;
    EXPECT_EQ(e.merge_field, row.merge_field) << row.body;
    EXPECT_EQ(e.kind, *row.merge_field ? TemplateError::Kind::unknown_field : TemplateError::Kind::syntax);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Rows, TemplateParse,
    ::testing::Values(
        ParseRow{"", {}},
        ParseRow{"Geen velden.", {}},
        ParseRow{"Beste {contact_voornaam},", {"contact_voornaam"}},
        ParseRow{"{contact_naam}{contact_naam} van {administratie_naam}", {"contact_naam", "administratie_naam"}},
        ParseRow{"{contact_dongel_type_uitlezing} {contact_dongel_type_dongel} {contact_dongel_mac_nummer} "
                 "{contact_dongel_datum_ondertekening} {contact_dongel_datum_start} {contact_dongel_datum_eind}",
                 {"contact_dongel_type_uitlezing", "contact_dongel_type_dongel", "contact_dongel_mac_nummer",
                  "contact_dongel_datum_ondertekening", "contact_dongel_datum_start", "contact_dongel_datum_eind"}},
        ParseRow{"<style>p {{ margin: 0 }}</style>{nota_nummer}", {"nota_nummer"}},
        ParseRow{"{{contact_naam}} is literal", {}},
        ParseRow{"{{{contact_naam}}}", {"contact_naam"}},
        ParseRow{"Beste {contact_vornaam},", {}, "unknown merge field {contact_vornaam} at line 1, column 7 (did you mean {contact_voornaam}?)",
                 "contact_vornaam"},
        ParseRow{"Regel 1\nRegel twee {iets_anders}", {}, "unknown merge field {iets_anders} at line 2, column 12", "iets_anders"},
        ParseRow{"één {Contact_Naam}", {}, "unknown merge field {Contact_Naam} at line 1, column 5 (did you mean {contact_naam}?)",
                 "Contact_Naam"},
        ParseRow{"{contact_dongel_mac}", {}, "unknown merge field {contact_dongel_mac} at line 1, column 1", "contact_dongel_mac"},
        ParseRow{"p { margin: 0 }", {}, "'{' does not open a merge field like {contact_naam} (write '{{' for a literal brace) at line 1, column 3"},
        ParseRow{"Beste {contact naam}", {}, "'{' does not open a merge field like {contact_naam} (write '{{' for a literal brace) at line 1, column 7"},
        ParseRow{"{}", {}, "'{' does not open a merge field like {contact_naam} (write '{{' for a literal brace) at line 1, column 1"},
        ParseRow{"open {contact_naam", {}, "'{' does not open a merge field like {contact_naam} (write '{{' for a literal brace) at line 1, column 6"},
        ParseRow{"eind {", {}, "'{' does not open a merge field like {contact_naam} (write '{{' for a literal brace) at line 1, column 6"},
        ParseRow{"{contact_naam}} ", {}, "lone '}' (write '}}' for a literal brace) at line 1, column 15"},
        ParseRow{"a\n\nb }", {}, "lone '}' (write '}}' for a literal brace) at line 3, column 3"}));

TEST(TemplateParse, ErrorCarriesOffsetAndPosition) {
  auto r = template_parse("ab\ncd {x}");
  ASSERT_TRUE(std::holds_alternative<TemplateError>(r));
  const auto& e = std::get<TemplateError>(r);
  EXPECT_EQ(e.offset, 6u);
  EXPECT_EQ(e.line, 2u);
  EXPECT_EQ(e.column, 4u);
}

TEST(TemplateFields, SeedFieldsAreKnown) {
  for (const char* f : {"contact_voornaam", "contact_naam", "administratie_naam", "contact_dongel_type_uitlezing",
                        "contact_dongel_type_dongel", "contact_dongel_mac_nummer", "contact_dongel_datum_ondertekening",
                        "contact_dongel_datum_start", "contact_dongel_datum_eind"})
    EXPECT_TRUE(template_field_known(f)) << f;
  EXPECT_FALSE(template_field_known("contact_wachtwoord"));
  EXPECT_FALSE(template_field_known(""));
  for (const auto& f : template_known_fields()) {
    EXPECT_FALSE(f.description.empty()) << f.name;
    for (char c : f.name) EXPECT_TRUE((c >= 'a' && c <= 'z') || c == '_') << f.name;
  }
}

struct RenderRow {
  const char* body;
  TemplateFormat format;
  const char* expected;
};

class TemplateRender : public ::testing::TestWithParam<RenderRow> {};

TEST_P(TemplateRender, Table) {
  const RenderRow& row = GetParam();
  const MergeValues values = {{"contact_voornaam", "Jan & <b>Piet</b>"},
                              {"contact_naam", "O'Brien \"Bob\""},
                              {"administratie_naam", "Zon\r\nBcc: evil@example.nl"},
                              {"contact_adres", "Dorpsstraat 1"}};
  auto parsed = template_parse(row.body);
  ASSERT_TRUE(std::holds_alternative<ParsedTemplate>(parsed)) << row.body;
  EXPECT_EQ(template_render(std::get<ParsedTemplate>(parsed), values, row.format), row.expected) << row.body;
}

INSTANTIATE_TEST_SUITE_P(
    Rows, TemplateRender,
    ::testing::Values(
        RenderRow{"Beste {contact_voornaam},", TemplateFormat::text, "Beste Jan & <b>Piet</b>,"},
        RenderRow{"<p>Beste {contact_voornaam},</p>", TemplateFormat::html, "<p>Beste Jan &amp; &lt;b&gt;Piet&lt;/b&gt;,</p>"},
        RenderRow{"<a title=\"{contact_naam}\">x</a>", TemplateFormat::html, "<a title=\"O&#39;Brien &quot;Bob&quot;\">x</a>"},
        RenderRow{"Nota van {administratie_naam}", TemplateFormat::header, "Nota van Zon Bcc: evil@example.nl"},
        RenderRow{"Nota van {administratie_naam}", TemplateFormat::text, "Nota van Zon\r\nBcc: evil@example.nl"},
        RenderRow{"<style>p {{ margin: 0 }}</style>", TemplateFormat::html, "<style>p { margin: 0 }</style>"},
        RenderRow{"MAC: [{contact_dongel_mac_nummer}]", TemplateFormat::text, "MAC: []"}));

TEST(TemplateRender, MissingValueIsEmpty) {
  auto parsed = std::get<ParsedTemplate>(template_parse("MAC: [{contact_dongel_mac_nummer}]"));
  EXPECT_EQ(template_render(parsed, {}, TemplateFormat::html), "MAC: []");
}

TEST(HtmlEscape, EscapesTheFiveCharacters) { EXPECT_EQ(html_escape("<a href='x'>&\"</a>"), "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"); }

}  // namespace
}  // namespace mailgate
