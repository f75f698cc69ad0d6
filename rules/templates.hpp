// rules/templates: e-mail templates with merge fields. Pure functions; a template that cannot be
// used comes back as a TemplateError value, never as an exception.
//
// Syntax. A merge field is `{name}` with name one of template_known_fields() (lower-case, e.g.
// {contact_voornaam}). A literal brace is written twice: `{{` gives `{`, `}}` gives `}` (so CSS in
// an HTML part is written `p {{ margin: 0 }}`). Every other brace is an error: a `{` that does
// not open a `{name}`, a lone `}`, and a field name that is not known. Templates are checked
// when they are saved, so a typo is refused then, not discovered while a mailing goes out.
//
// Rendering fills each field from a value map; a field without a value renders as the empty
// string (a contact without a dongle has no {contact_dongel_mac_nummer}). Values are plain text:
// in an HTML part they are HTML-escaped (& < > " '); in a header (the subject) every run of CR,
// LF and other control characters becomes one space, so a value can never start a new header.
// The template text itself is never escaped: it is written by an admin.
#pragma once
#include <cstddef>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace mailgate {

struct MergeField {
  std::string_view name;         // "contact_voornaam"
  std::string_view description;  // Dutch label as the CRM shows it: "voornaam van het contact"
};

// Every merge field a template may use, in display order. The sending code (issue 5) fills these;
// the nota_* fields only have values in invoice mails.
const std::vector<MergeField>& template_known_fields();
bool template_field_known(std::string_view name);

struct TemplateError {
  enum class Kind { unknown_field, syntax };
  Kind kind = Kind::syntax;
  std::string merge_field;  // the unknown field's name (unknown_field only)
  std::size_t offset = 0;   // byte offset of the offending brace
  std::size_t line = 1;     // 1-based; column counts characters (UTF-8), not bytes
  std::size_t column = 1;
  std::string message;      // "unknown merge field {contact_vornaam} at line 1, column 7 (did you mean {contact_voornaam}?)"
};

struct TemplateSegment {
  bool is_field = false;
  std::string text;  // literal text (escapes resolved), or the field name
};

struct ParsedTemplate {
  std::vector<TemplateSegment> segments;
  // The merge fields used, each once, in order of first use.
  std::vector<std::string> fields() const;
};

std::variant<ParsedTemplate, TemplateError> template_parse(std::string_view body);

enum class TemplateFormat {
  text,    // values as they are
  html,    // values HTML-escaped
  header,  // values with control-character runs replaced by one space
};

using MergeValues = std::map<std::string, std::string, std::less<>>;

std::string template_render(const ParsedTemplate& t, const MergeValues& values, TemplateFormat format);

// & < > " ' as entities; for text that goes into HTML as text or as a quoted attribute value.
std::string html_escape(std::string_view s);

}  // namespace mailgate
