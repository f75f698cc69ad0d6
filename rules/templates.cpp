// rules/templates: parse, check and render e-mail templates with {merge_fields}; see the header
// for the syntax and the escaping contract.
#include "rules/templates.hpp"

#include <algorithm>
#include <set>

namespace mailgate {

namespace {

bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

// The known field closest to `name` when it looks like a typo of one (case ignored), else "".
std::string_view closest_field(std::string_view name) {
  std::string lower(name);
  for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::string_view best;
  std::size_t best_distance = lower.size() < 12 ? 2 : 3;  // the most a typo may differ by
  for (const auto& f : template_known_fields()) {
    const std::size_t d = edit_distance(lower, f.name);
    if (d < best_distance || (d <= best_distance && best.empty())) {
      best = f.name;
      best_distance = d;
    }
  }
  return best;
}

TemplateError error_at(std::string_view body, std::size_t offset, TemplateError::Kind kind, std::string field,
                       const std::string& what) {
  TemplateError e;
  e.kind = kind;
  e.merge_field = std::move(field);
  e.offset = offset;
  for (std::size_t i = 0; i < offset; ++i) {
    const auto c = static_cast<unsigned char>(body[i]);
    if (c == '\n') {
      ++e.line;
      e.column = 1;
    } else if ((c & 0xC0) != 0x80) {  // UTF-8 continuation bytes do not start a character
      ++e.column;
    }
  }
  e.message = what + " at line " + std::to_string(e.line) + ", column " + std::to_string(e.column);
  return e;
}

}  // namespace

const std::vector<MergeField>& template_known_fields() {
  static const std::vector<MergeField> fields = {
      // The contact the mail is for.
      {"contact_nummer", "contactnummer"},
      {"contact_aanspreektitel", "aanspreektitel van het contact"},
      {"contact_voornaam", "voornaam van het contact"},
      {"contact_tussenvoegsel", "tussenvoegsel van het contact"},
      {"contact_achternaam", "achternaam van het contact"},
      {"contact_naam", "volledige naam van het contact (persoon) of de organisatienaam"},
      {"contact_email", "primair e-mailadres van het contact"},
      {"contact_telefoonnummer", "telefoonnummer van het contact"},
      {"contact_adres", "straat en huisnummer van het contact"},
      {"contact_postcode", "postcode van het contact"},
      {"contact_woonplaats", "woonplaats van het contact"},
      {"contact_land", "land van het contact"},
      // The contact's dongle registration (seed: "Handleiding registratie Dongel").
      {"contact_dongel_type_uitlezing", "type uitlezing van de dongel (P1, P4)"},
      {"contact_dongel_type_dongel", "type dongel"},
      {"contact_dongel_mac_nummer", "MAC-nummer van de dongel"},
      {"contact_dongel_datum_ondertekening", "datum ondertekening"},
      {"contact_dongel_datum_start", "startdatum"},
      {"contact_dongel_datum_eind", "einddatum"},
      // The administration the mail is sent for.
      {"administratie_naam", "naam van de administratie"},
      {"administratie_adres", "straat en huisnummer van de administratie"},
      {"administratie_postcode", "postcode van de administratie"},
      {"administratie_woonplaats", "plaats van de administratie"},
      {"administratie_land", "land van de administratie"},
      {"administratie_kvk", "KvK-nummer"},
      {"administratie_btw_nummer", "btw-nummer"},
      {"administratie_iban", "IBAN"},
      {"administratie_email", "e-mailadres van de administratie"},
      {"administratie_website", "website van de administratie"},
      // The invoice (only in the four invoice mails of an administration).
      {"nota_nummer", "notanummer"},
      {"nota_datum", "notadatum"},
      {"nota_vervaldatum", "vervaldatum"},
      {"nota_bedrag", "totaalbedrag inclusief btw"},
  };
  return fields;
}

bool template_field_known(std::string_view name) {
  static const std::set<std::string_view, std::less<>> names = [] {
    std::set<std::string_view, std::less<>> s;
    for (const auto& f : template_known_fields()) s.insert(f.name);
    return s;
  }();
  return names.count(name) > 0;
}

std::vector<std::string> ParsedTemplate::fields() const {
  std::vector<std::string> out;
  for (const auto& s : segments)
    if (s.is_field && std::find(out.begin(), out.end(), s.text) == out.end()) out.push_back(s.text);
  return out;
}

std::variant<ParsedTemplate, TemplateError> template_parse(std::string_view body) {
  ParsedTemplate t;
  std::string literal;
  auto flush = [&] {
    if (!literal.empty()) t.segments.push_back({false, std::move(literal)});
    literal.clear();
  };
  for (std::size_t i = 0; i < body.size();) {
    const char c = body[i];
    if (c == '{') {
      if (i + 1 < body.size() && body[i + 1] == '{') {
        literal.push_back('{');
        i += 2;
        continue;
      }
      std::size_t j = i + 1;
      while (j < body.size() && is_name_char(body[j])) ++j;
      if (j == i + 1 || j >= body.size() || body[j] != '}')
        return error_at(body, i, TemplateError::Kind::syntax, {},
                        "'{' does not open a merge field like {contact_naam} (write '{{' for a literal brace)");
      std::string name(body.substr(i + 1, j - i - 1));
      if (!template_field_known(name)) {
        std::string what = "unknown merge field {" + name + "}";
        const std::string_view hint = closest_field(name);
        auto e = error_at(body, i, TemplateError::Kind::unknown_field, name, what);
        if (!hint.empty()) e.message += " (did you mean {" + std::string(hint) + "}?)";
        return e;
      }
      flush();
      t.segments.push_back({true, std::move(name)});
      i = j + 1;
    } else if (c == '}') {
      if (i + 1 < body.size() && body[i + 1] == '}') {
        literal.push_back('}');
        i += 2;
        continue;
      }
      return error_at(body, i, TemplateError::Kind::syntax, {}, "lone '}' (write '}}' for a literal brace)");
    } else {
      literal.push_back(c);
      ++i;
    }
  }
  flush();
  return t;
}

std::string html_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out.push_back(c);
    }
  }
  return out;
}

namespace {

std::string header_safe(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  bool in_run = false;
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7F) {
      if (!in_run) out.push_back(' ');
      in_run = true;
    } else {
      out.push_back(c);
      in_run = false;
    }
  }
  return out;
}

}  // namespace

std::string template_render(const ParsedTemplate& t, const MergeValues& values, TemplateFormat format) {
  std::string out;
  for (const auto& s : t.segments) {
    if (!s.is_field) {
      out += s.text;
      continue;
    }
    auto it = values.find(s.text);
    if (it == values.end()) continue;
    switch (format) {
      case TemplateFormat::text: out += it->second; break;
      case TemplateFormat::html: out += html_escape(it->second); break;
      case TemplateFormat::header: out += header_safe(it->second); break;
    }
  }
  return out;
}

}  // namespace mailgate
