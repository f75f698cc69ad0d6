// /api/v1: administrations (legal / accounting entities), e-mail templates, products and orders.
//
// Contract:
// - Reads need `read`; administrations, templates and products are written by `admin`, orders
//   by `crm.write` (staff). Nothing is deleted: administrations, templates and products are
//   deactivated with "active": false, orders end with status "terminated".
// - Every change is audited (entity administration | template | product | order) with the
//   field-by-field diff, in the transaction that makes it.
// - Input is validated field by field (422 naming the field): strings trimmed, CR/LF refused in
//   single-line fields; KvK (8 digits), Dutch VAT number (NL + 9 digits + B + 2 digits, with its
//   check digit), IBAN (mod-97, stored upper-case without spaces). Names and product codes that
//   exist already answer 409.
// - A template's subject and bodies may only use known merge fields (rules/templates.hpp): a
//   template that does not parse is refused with 422, code unknown_merge_field or
//   template_syntax, naming the field and giving the line and column.
// - A product's duration is fixed at creation (422 "immutable"); its price_per must fit the
//   duration (rules/product.hpp). Orders move concept -> active -> terminated, never back.
#include <algorithm>
#include <array>
#include <cctype>

#include <boost/json/serialize.hpp>
#include <pqxx/pqxx>

#include "daemon/api.hpp"
#include "rules/address.hpp"
#include "rules/product.hpp"
#include "rules/templates.hpp"
#include "store/run.hpp"

namespace mailgate {

namespace json = boost::json;
using boost::asio::awaitable;

namespace {

// --- value checks (pure) ---------------------------------------------------------------------

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_upper(char c) { return c >= 'A' && c <= 'Z'; }

// Drops the separators people type between groups of characters and upper-cases the rest.
std::string compact_upper(std::string_view s, std::string_view separators) {
  std::string out;
  for (char c : s)
    if (separators.find(c) == std::string_view::npos) out.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
  return out;
}

// ISO 7064 mod 97-10 over letters (A=10 ... Z=35) and digits.
int mod97(std::string_view s) {
  int r = 0;
  for (char c : s) {
    if (is_digit(c))
      r = (r * 10 + (c - '0')) % 97;
    else
      r = (r * 100 + (c - 'A' + 10)) % 97;
  }
  return r;
}

std::string normalize_kvk(const std::string& field, const std::string& input) {
  std::string s = compact_upper(input, " .");
  if (s.empty()) return s;
  if (s.size() != 8 || !std::all_of(s.begin(), s.end(), is_digit)) invalid(field, field + " must be 8 digits (KvK number)");
  return s;
}

// Dutch VAT number: NL, 9 digits, B, 2 digits (not 00). The 9 digits pass the RSIN 11-check
// (weights 9..2 and -1), or, for the numbers issued to sole traders since 2020, the whole
// number passes ISO 7064 mod 97-10.
std::string normalize_vat(const std::string& field, const std::string& input) {
  std::string s = compact_upper(input, " .-");
  if (s.empty()) return s;
  const bool shape = s.size() == 14 && s.compare(0, 2, "NL") == 0 && std::all_of(s.begin() + 2, s.begin() + 11, is_digit) &&
                     s[11] == 'B' && is_digit(s[12]) && is_digit(s[13]);
  if (!shape) invalid(field, field + " must be a Dutch VAT number: NL, 9 digits, B and 2 digits (NL123456782B01)");
  if (s.compare(12, 2, "00") == 0) invalid(field, field + " must not end in B00");
  int sum = 0;
  for (int i = 0; i < 8; ++i) sum += (9 - i) * (s[2 + i] - '0');
  sum -= s[10] - '0';
  if (sum % 11 != 0 && mod97(s) != 1)
    invalid(field, field + " has a wrong check digit; check for a typing error", "invalid_checksum");
  return s;
}

// IBAN length per country, for the countries an administration here is likely to bank in.
int iban_length(std::string_view country) {
  static const std::array<std::pair<std::string_view, int>, 16> lengths = {{{"NL", 18}, {"BE", 16}, {"DE", 22}, {"FR", 27},
                                                                             {"GB", 22}, {"LU", 20}, {"ES", 24}, {"IT", 27},
                                                                             {"AT", 20}, {"CH", 21}, {"DK", 18}, {"NO", 15},
                                                                             {"SE", 24}, {"FI", 18}, {"IE", 22}, {"PT", 25}}};
  for (const auto& [c, n] : lengths)
    if (c == country) return n;
  return 0;
}

std::string normalize_iban(const std::string& field, const std::string& input) {
  std::string s = compact_upper(input, " ");
  if (s.empty()) return s;
  if (!std::all_of(s.begin(), s.end(), [](char c) { return is_digit(c) || is_upper(c); }))
    invalid(field, field + " may only contain letters and digits (NL91 ABNA 0417 1643 00)");
  if (s.size() < 15 || s.size() > 34 || !is_upper(s[0]) || !is_upper(s[1]) || !is_digit(s[2]) || !is_digit(s[3]))
    invalid(field, field + " must be a country code, two check digits and the account (NL91 ABNA 0417 1643 00)");
  if (const int n = iban_length(s.substr(0, 2)); n && static_cast<int>(s.size()) != n)
    invalid(field, field + ": an IBAN from " + s.substr(0, 2) + " has " + std::to_string(n) + " characters, this one " +
                       std::to_string(s.size()));
  if (s.compare(0, 2, "NL") == 0 && !(std::all_of(s.begin() + 4, s.begin() + 8, is_upper) && std::all_of(s.begin() + 8, s.end(), is_digit)))
    invalid(field, field + ": a Dutch IBAN is NL, 2 check digits, a 4-letter bank code and 10 digits");
  if (mod97(s.substr(4) + s.substr(0, 4)) != 1)
    invalid(field, field + " has wrong check digits (mod-97); check for a typing error", "invalid_checksum");
  return s;
}

std::string normalize_country(const std::string& field, const std::string& input) {
  std::string s = compact_upper(input, "");
  if (s.size() != 2 || !is_upper(s[0]) || !is_upper(s[1])) invalid(field, field + " must be a two-letter country code (NL)");
  return s;
}

// Dutch postcodes are stored as "1234AB", the form contacts use (0004_contacts.sql); other
// countries' codes are kept as typed.
std::string normalize_postal_code(const std::string& field, const std::string& input, const std::string& country) {
  if (input.empty() || country != "NL") return input;
  std::string s = compact_upper(input, " ");
  if (s.size() != 6 || s[0] == '0' || !std::all_of(s.begin(), s.begin() + 4, is_digit) || !is_upper(s[4]) || !is_upper(s[5]))
    invalid(field, field + " must be a Dutch postcode (1234 AB)");
  return s;
}

// "www.example.nl" becomes "https://www.example.nl"; only http and https, the host must be a
// valid domain name.
std::string normalize_website(const std::string& field, const std::string& input) {
  if (input.empty()) return input;
  std::string s = input;
  if (s.find_first_of(" \t\"<>") != std::string::npos) invalid(field, field + " must be a web address without spaces or quotes");
  auto scheme_end = s.find("://");
  if (scheme_end == std::string::npos) {
    s = "https://" + s;
    scheme_end = 5;
  }
  std::string scheme = s.substr(0, scheme_end);
  for (auto& c : scheme) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (scheme != "http" && scheme != "https") invalid(field, field + " must be an http or https address");
  const auto host_start = scheme_end + 3;
  const auto host_end = s.find_first_of("/?#:", host_start);
  auto host = normalize_domain(s.substr(host_start, host_end == std::string::npos ? std::string::npos : host_end - host_start));
  if (auto* e = std::get_if<AddressError>(&host)) invalid(field, field + ": " + e->reason);
  return scheme + "://" + std::get<std::string>(host) + (host_end == std::string::npos ? "" : s.substr(host_end));
}

bool valid_date(const std::string& s) {
  if (s.size() != 10 || s[4] != '-' || s[7] != '-') return false;
  for (std::size_t i : {0, 1, 2, 3, 5, 6, 8, 9})
    if (!is_digit(s[i])) return false;
  const int y = std::stoi(s.substr(0, 4)), m = std::stoi(s.substr(5, 2)), d = std::stoi(s.substr(8, 2));
  if (y < 1900 || y > 2999 || m < 1 || m > 12 || d < 1) return false;
  static constexpr int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  return d <= days[m - 1] + (m == 2 && leap ? 1 : 0);
}

// --- input helpers ---------------------------------------------------------------------------

// A text field that may be cleared: absent -> nullopt, null -> "", else the trimmed value.
std::optional<std::string> clearable_text(const JsonInput& in, const std::string& key, std::size_t max_length = 200) {
  if (in.has(key) && in.raw(key)->is_null()) return std::string();
  return in.text(key, false, max_length);
}

// An id field that may be cleared: absent -> nullopt, null -> optional holding nullopt.
std::optional<std::optional<std::int64_t>> clearable_id(const JsonInput& in, const std::string& key) {
  if (!in.has(key)) return std::nullopt;
  if (in.raw(key)->is_null()) return std::optional<std::int64_t>();
  return in.integer(key, 1, INT64_MAX);
}

std::optional<std::string> date_field(const JsonInput& in, const std::string& key, bool required = false) {
  auto s = in.text(key, required, 10);
  if (s && !valid_date(*s)) invalid(key, key + " must be a date as YYYY-MM-DD");
  return s;
}

std::string query_text(const HttpRequest& req, const std::string& key) {
  auto it = req.query.find(key);
  return it == req.query.end() ? std::string() : trim(it->second);
}

// --- output helpers --------------------------------------------------------------------------

#define MG_TIME(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"

json::value nullable_text(const pqxx::field& f) { return f.is_null() ? json::value(nullptr) : json::value(f.c_str()); }


std::optional<std::int64_t> id_of(const json::value& v) {
  return v.is_null() ? std::nullopt : std::optional<std::int64_t>(v.as_int64());
}
std::string str_of(const json::object& o, const char* key) { return std::string(o.at(key).as_string()); }

// Changes worth auditing: the stored fields, not the bookkeeping or computed ones.
std::vector<FieldChange> audit_diff(const json::object& before, const json::object& after, std::initializer_list<const char*> computed) {
  auto changes = diff_objects(before, after);
  std::erase_if(changes, [&](const FieldChange& c) {
    if (c.field == "updated_at" || c.field == "created_at") return true;
    for (const char* k : computed)
      if (c.field == k) return true;
    return false;
  });
  return changes;
}

HttpResponse id_page(json::array items, const Page& page) {
  return page_response(std::move(items), page, [](const json::value& v) { return v.at("id").as_int64(); });
}

// Runs `write` and turns a unique-index race (both requests passed the pre-check) into 409.
template <class F>
void unique_or_409(F&& write, const std::string& field, const std::string& message) {
  try {
    write();
  } catch (const pqxx::unique_violation&) {
    throw ApiError(409, "taken", message, field);
  }
}

// --- templates -------------------------------------------------------------------------------

constexpr const char* kTemplateColumns =
    "t.id, t.name, t.subject, t.html_body, t.text_body, t.merge_fields, t.active, " MG_TIME("t.created_at") ", " MG_TIME("t.updated_at");
constexpr const char* kTemplateListColumns =
    "t.id, t.name, t.subject, NULL, NULL, t.merge_fields, t.active, " MG_TIME("t.created_at") ", " MG_TIME("t.updated_at");

json::object template_json(const pqxx::row& r, bool bodies) {
  json::object o{{"id", r[0].as<std::int64_t>()}, {"name", r[1].c_str()}, {"subject", r[2].c_str()}};
  if (bodies) {
    o["html_body"] = r[3].c_str();
    o["text_body"] = r[4].c_str();
  }
  o["merge_fields"] = json_text_array(r[5]);
  o["active"] = r[6].as<bool>();
  o["created_at"] = r[7].c_str();
  o["updated_at"] = r[8].c_str();
  return o;
}

json::object load_template(pqxx::work& tx, std::int64_t id) {
  auto r = tx.exec_params(std::string("SELECT ") + kTemplateColumns + " FROM templates t WHERE t.id = $1", id);
  if (r.empty()) throw ApiError(404, "not_found", "no template with id " + std::to_string(id));
  return template_json(r[0], true);
}

struct TemplateFields {
  std::optional<std::string> name, subject, html_body, text_body;
  std::optional<bool> active;
};

constexpr std::size_t kMaxHtmlBody = 512 * 1024, kMaxTextBody = 256 * 1024;

TemplateFields read_template_fields(const JsonInput& in, bool creating) {
  in.only({"name", "subject", "html_body", "text_body", "active"});
  TemplateFields f;
  f.name = in.text("name", creating, 100);
  if (f.name && f.name->empty()) invalid("name", "name must not be empty", "required");
  f.subject = in.text("subject", creating, 255);
  if (f.subject && f.subject->empty()) invalid("subject", "subject must not be empty", "required");
  auto body = [&](const char* key, std::size_t max) -> std::optional<std::string> {
    if (!in.has(key)) return std::nullopt;
    if (in.raw(key)->is_null()) return std::string();
    return in.text(key, false, max, true);
  };
  f.html_body = body("html_body", kMaxHtmlBody);
  f.text_body = body("text_body", kMaxTextBody);
  f.active = in.boolean("active");
  return f;
}

// The merge fields of a whole template; refuses the first part that does not parse.
std::vector<std::string> template_merge_fields(const std::string& subject, const std::string& html, const std::string& text) {
  std::vector<std::string> all;
  for (const auto& [field, body] : {std::pair<const char*, const std::string*>{"subject", &subject}, {"html_body", &html}, {"text_body", &text}}) {
    auto parsed = template_parse(*body);
    if (auto* e = std::get_if<TemplateError>(&parsed))
      invalid(field, std::string(field) + ": " + e->message,
              e->kind == TemplateError::Kind::unknown_field ? "unknown_merge_field" : "template_syntax");
    for (auto& name : std::get<ParsedTemplate>(parsed).fields())
      if (std::find(all.begin(), all.end(), name) == all.end()) all.push_back(std::move(name));
  }
  return all;
}

std::string pg_text_array(const std::vector<std::string>& items) {
  std::string a = "{";
  for (std::size_t i = 0; i < items.size(); ++i) a += (i ? "," : "") + items[i];  // field names: [a-z_] only
  return a + "}";
}

void check_template_name_free(pqxx::work& tx, const std::string& name, std::int64_t id) {
  if (!tx.exec_params("SELECT 1 FROM templates WHERE lower(name) = lower($1) AND id <> $2", name, id).empty())
    throw ApiError(409, "taken", "a template named '" + name + "' exists already", "name");
}

// The column of administrations that holds each of its four invoice templates.
constexpr std::array<const char*, 4> kTemplateSlots = {"invoice_transfer_template_id", "invoice_direct_debit_template_id",
                                                       "reminder_template_id", "dunning_template_id"};

// --- administrations -------------------------------------------------------------------------

constexpr const char* kAdministrationColumns =
    "a.id, a.name, a.address, a.postal_code, a.city, a.country, a.kvk_number, a.vat_number, a.iban, a.email, a.website, "
    "a.sender_mailbox_id, a.bcc_self, a.invoice_transfer_template_id, a.invoice_direct_debit_template_id, "
    "a.reminder_template_id, a.dunning_template_id, a.active, " MG_TIME("a.created_at") ", " MG_TIME("a.updated_at") ", "
    // The mailbox that sends for it now: its own when still active, else the active primary one.
    "coalesce((SELECT m.id FROM mailboxes m WHERE m.id = a.sender_mailbox_id AND m.active), "
    "         (SELECT m.id FROM mailboxes m WHERE m.is_primary AND m.active))";

json::object administration_json(const pqxx::row& r) {
  return {{"id", r[0].as<std::int64_t>()},
          {"name", r[1].c_str()},
          {"address", r[2].c_str()},
          {"postal_code", r[3].c_str()},
          {"city", r[4].c_str()},
          {"country", r[5].c_str()},
          {"kvk_number", r[6].c_str()},
          {"vat_number", r[7].c_str()},
          {"iban", r[8].c_str()},
          {"email", r[9].c_str()},
          {"website", r[10].c_str()},
          {"sender_mailbox_id", json_nullable_id(r[11])},
          {"bcc_self", r[12].as<bool>()},
          {"invoice_transfer_template_id", json_nullable_id(r[13])},
          {"invoice_direct_debit_template_id", json_nullable_id(r[14])},
          {"reminder_template_id", json_nullable_id(r[15])},
          {"dunning_template_id", json_nullable_id(r[16])},
          {"active", r[17].as<bool>()},
          {"created_at", r[18].c_str()},
          {"updated_at", r[19].c_str()},
          {"effective_sender_mailbox_id", json_nullable_id(r[20])}};
}

json::object load_administration(pqxx::work& tx, std::int64_t id) {
  auto r = tx.exec_params(std::string("SELECT ") + kAdministrationColumns + " FROM administrations a WHERE a.id = $1", id);
  if (r.empty()) throw ApiError(404, "not_found", "no administration with id " + std::to_string(id));
  return administration_json(r[0]);
}

// What a request asks to change; each field present only when given.
struct AdministrationInput {
  std::map<std::string, std::string> text;  // name, address, postal_code, city, country, kvk_number, ... (validated)
  std::map<std::string, std::optional<std::int64_t>> ids;  // sender_mailbox_id and the template slots
  std::optional<bool> bcc_self, active;
};

AdministrationInput read_administration_input(const JsonInput& in, bool creating) {
  in.only({"name", "address", "postal_code", "city", "country", "kvk_number", "vat_number", "iban", "email", "website",
           "sender_mailbox_id", "bcc_self", "invoice_transfer_template_id", "invoice_direct_debit_template_id",
           "reminder_template_id", "dunning_template_id", "active"});
  AdministrationInput a;
  if (auto v = in.text("name", creating, 200)) {
    if (v->empty()) invalid("name", "name must not be empty", "required");
    a.text["name"] = *v;
  }
  for (const char* k : {"address", "postal_code", "city"})
    if (auto v = clearable_text(in, k, 200)) a.text[k] = *v;
  if (auto v = in.text("country", false, 10)) a.text["country"] = normalize_country("country", *v);
  if (auto v = clearable_text(in, "kvk_number", 20)) a.text["kvk_number"] = normalize_kvk("kvk_number", *v);
  if (auto v = clearable_text(in, "vat_number", 30)) a.text["vat_number"] = normalize_vat("vat_number", *v);
  if (auto v = clearable_text(in, "iban", 50)) a.text["iban"] = normalize_iban("iban", *v);
  if (in.has("email")) a.text["email"] = in.raw("email")->is_null() ? std::string() : in.email("email").value_or("");
  if (auto v = clearable_text(in, "website", 200)) a.text["website"] = normalize_website("website", *v);
  if (auto v = clearable_id(in, "sender_mailbox_id")) a.ids["sender_mailbox_id"] = *v;
  for (const char* k : kTemplateSlots)
    if (auto v = clearable_id(in, k)) a.ids[k] = *v;
  a.bcc_self = in.boolean("bcc_self");
  a.active = in.boolean("active");
  return a;
}

// Applies the input to the stored state (or the defaults), checks what depends on other rows,
// and writes the row. Returns the id.
std::int64_t write_administration(pqxx::work& tx, const AdministrationInput& in, std::optional<std::int64_t> id) {
  json::object cur = id ? load_administration(tx, *id) : json::object{{"country", "NL"}};
  auto text = [&](const std::string& k) {
    auto it = in.text.find(k);
    return it != in.text.end() ? it->second : cur.contains(k) ? str_of(cur, k.c_str()) : std::string();
  };
  auto ref = [&](const std::string& k) -> std::optional<std::int64_t> {
    auto it = in.ids.find(k);
    return it != in.ids.end() ? it->second : cur.contains(k) ? id_of(cur.at(k)) : std::nullopt;
  };
  const std::string name = text("name"), country = text("country");
  // A postcode is checked against the country it ends up with (either may change).
  const std::string postal_code = normalize_postal_code("postal_code", text("postal_code"), country);
  if (!tx.exec_params("SELECT 1 FROM administrations WHERE lower(name) = lower($1) AND id <> $2", name, id.value_or(0)).empty())
    throw ApiError(409, "taken", "an administration named '" + name + "' exists already", "name");

  const auto sender = ref("sender_mailbox_id");
  if (in.ids.count("sender_mailbox_id") && sender) {
    auto m = tx.exec_params("SELECT active FROM mailboxes WHERE id = $1", *sender);
    if (m.empty()) invalid("sender_mailbox_id", "sender_mailbox_id: no mailbox with id " + std::to_string(*sender));
    if (!m[0][0].as<bool>()) invalid("sender_mailbox_id", "sender_mailbox_id: mailbox " + std::to_string(*sender) + " is deactivated");
  }
  for (const char* slot : kTemplateSlots) {
    const auto t = ref(slot);
    if (!in.ids.count(slot) || !t) continue;
    auto r = tx.exec_params("SELECT active FROM templates WHERE id = $1", *t);
    if (r.empty()) invalid(slot, std::string(slot) + ": no template with id " + std::to_string(*t));
    if (!r[0][0].as<bool>()) invalid(slot, std::string(slot) + ": template " + std::to_string(*t) + " is deactivated");
  }
  const bool bcc_self = in.bcc_self.value_or(cur.contains("bcc_self") && cur.at("bcc_self").as_bool());
  const bool active = in.active.value_or(!cur.contains("active") || cur.at("active").as_bool());

  std::int64_t out = id.value_or(0);
  unique_or_409(
      [&] {
        if (!id) {
          out = tx.exec_params1(
                      "INSERT INTO administrations (name, address, postal_code, city, country, kvk_number, vat_number, iban, email, "
                      "website, sender_mailbox_id, bcc_self, invoice_transfer_template_id, invoice_direct_debit_template_id, "
                      "reminder_template_id, dunning_template_id, active) "
                      "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) RETURNING id",
                      name, text("address"), postal_code, text("city"), country, text("kvk_number"), text("vat_number"),
                      text("iban"), text("email"), text("website"), sender, bcc_self, ref(kTemplateSlots[0]),
                      ref(kTemplateSlots[1]), ref(kTemplateSlots[2]), ref(kTemplateSlots[3]), active)[0]
                    .as<std::int64_t>();
        } else {
          tx.exec_params(
              "UPDATE administrations SET name = $2, address = $3, postal_code = $4, city = $5, country = $6, kvk_number = $7, "
              "vat_number = $8, iban = $9, email = $10, website = $11, sender_mailbox_id = $12, bcc_self = $13, "
              "invoice_transfer_template_id = $14, invoice_direct_debit_template_id = $15, reminder_template_id = $16, "
              "dunning_template_id = $17, active = $18, updated_at = now() WHERE id = $1",
              *id, name, text("address"), postal_code, text("city"), country, text("kvk_number"), text("vat_number"),
              text("iban"), text("email"), text("website"), sender, bcc_self, ref(kTemplateSlots[0]), ref(kTemplateSlots[1]),
              ref(kTemplateSlots[2]), ref(kTemplateSlots[3]), active);
        }
      },
      "name", "an administration named '" + name + "' exists already");
  return out;
}

// --- products --------------------------------------------------------------------------------

constexpr const char* kProductColumns =
    "p.id, p.administration_id, p.name, p.code, p.description, p.duration, p.price_per, p.price_cents, p.vat_percentage, "
    "p.active, " MG_TIME("p.created_at") ", " MG_TIME("p.updated_at");

json::object product_json(const pqxx::row& r) {
  return {{"id", r[0].as<std::int64_t>()},
          {"administration_id", r[1].as<std::int64_t>()},
          {"name", r[2].c_str()},
          {"code", r[3].c_str()},
          {"description", r[4].c_str()},
          {"duration", r[5].c_str()},
          {"price_per", r[6].c_str()},
          {"price_cents", r[7].as<std::int64_t>()},
          {"vat_percentage", json_nullable_id(r[8])},
          {"active", r[9].as<bool>()},
          {"created_at", r[10].c_str()},
          {"updated_at", r[11].c_str()}};
}

json::object load_product(pqxx::work& tx, std::int64_t id) {
  auto r = tx.exec_params(std::string("SELECT ") + kProductColumns + " FROM products p WHERE p.id = $1", id);
  if (r.empty()) throw ApiError(404, "not_found", "no product with id " + std::to_string(id));
  return product_json(r[0]);
}

struct ProductInput {
  std::optional<std::int64_t> administration_id;
  std::optional<std::string> name, code, description, duration, price_per;
  std::optional<std::int64_t> price_cents;
  std::optional<std::optional<std::int64_t>> vat_percentage;
  std::optional<bool> active;
};

std::string duration_names() {
  std::string out;
  for (auto d : {Duration::none, Duration::month, Duration::quarter, Duration::half_year, Duration::year, Duration::until_cancelled})
    out += (out.empty() ? "" : ", ") + to_string(d);
  return out;
}

std::string price_per_names() {
  std::string out;
  for (auto p : {PricePer::none, PricePer::month, PricePer::quarter, PricePer::half_year, PricePer::year})
    out += (out.empty() ? "" : ", ") + to_string(p);
  return out;
}

constexpr std::int64_t kMaxPriceCents = 100'000'000'00;  // a hundred million euro

ProductInput read_product_input(const JsonInput& in, bool creating) {
  in.only({"administration_id", "name", "code", "description", "duration", "price_per", "price_cents", "vat_percentage", "active"});
  ProductInput p;
  p.administration_id = in.integer("administration_id", 1, INT64_MAX, creating);
  p.name = in.text("name", creating, 200);
  if (p.name && p.name->empty()) invalid("name", "name must not be empty", "required");
  p.code = in.text("code", creating, 30);
  if (p.code) {
    if (p.code->empty()) invalid("code", "code must not be empty", "required");
    for (char c : *p.code)
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.'))
        invalid("code", "code may only contain letters, digits, '-', '_' and '.'");
  }
  if (in.has("description")) p.description = in.raw("description")->is_null() ? std::string() : *in.text("description", false, 2000, true);
  p.duration = in.text("duration", creating, 30);
  if (p.duration && !parse_duration(*p.duration)) invalid("duration", "duration must be one of " + duration_names());
  p.price_per = in.text("price_per", creating, 30);
  if (p.price_per && !parse_price_per(*p.price_per)) invalid("price_per", "price_per must be one of " + price_per_names());
  p.price_cents = in.integer("price_cents", -kMaxPriceCents, kMaxPriceCents, creating);
  if (in.has("vat_percentage")) p.vat_percentage = in.raw("vat_percentage")->is_null() ? std::optional<std::int64_t>() : in.integer("vat_percentage", 0, 100);
  p.active = in.boolean("active");
  return p;
}

std::int64_t write_product(pqxx::work& tx, const ProductInput& in, std::optional<std::int64_t> id) {
  json::object cur = id ? load_product(tx, *id) : json::object{};
  if (id) {
    if (in.duration && *in.duration != cur.at("duration").as_string())
      invalid("duration", "the duration of a product cannot change; create a new product instead", "immutable");
    if (in.administration_id && *in.administration_id != cur.at("administration_id").as_int64())
      invalid("administration_id", "a product cannot move to another administration; create a new product instead", "immutable");
  }
  auto text = [&](const std::optional<std::string>& v, const char* k) { return v ? *v : cur.contains(k) ? str_of(cur, k) : std::string(); };
  const std::string name = text(in.name, "name"), code = text(in.code, "code"), duration = text(in.duration, "duration"),
                    price_per = text(in.price_per, "price_per"), description = text(in.description, "description");
  const std::int64_t administration_id = in.administration_id.value_or(cur.contains("administration_id") ? cur.at("administration_id").as_int64() : 0);
  const std::int64_t price_cents = in.price_cents.value_or(cur.contains("price_cents") ? cur.at("price_cents").as_int64() : 0);
  const std::optional<std::int64_t> vat = in.vat_percentage ? *in.vat_percentage : cur.contains("vat_percentage") ? id_of(cur.at("vat_percentage")) : std::nullopt;
  const bool active = in.active.value_or(!cur.contains("active") || cur.at("active").as_bool());

  if (auto why = product_price_per_violation(*parse_duration(duration), *parse_price_per(price_per))) invalid("price_per", "price_per: " + *why);
  if (!id) {
    auto a = tx.exec_params("SELECT active FROM administrations WHERE id = $1", administration_id);
    if (a.empty()) invalid("administration_id", "administration_id: no administration with id " + std::to_string(administration_id));
    if (!a[0][0].as<bool>())
      invalid("administration_id", "administration_id: administration " + std::to_string(administration_id) + " is deactivated");
  }
  if (!tx.exec_params("SELECT 1 FROM products WHERE lower(name) = lower($1) AND id <> $2", name, id.value_or(0)).empty())
    throw ApiError(409, "taken", "a product named '" + name + "' exists already", "name");
  if (!tx.exec_params("SELECT 1 FROM products WHERE lower(code) = lower($1) AND id <> $2", code, id.value_or(0)).empty())
    throw ApiError(409, "taken", "a product with code '" + code + "' exists already", "code");

  std::int64_t out = id.value_or(0);
  unique_or_409(
      [&] {
        if (!id)
          out = tx.exec_params1(
                      "INSERT INTO products (administration_id, name, code, description, duration, price_per, price_cents, "
                      "vat_percentage, active) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
                      administration_id, name, code, description, duration, price_per, price_cents, vat, active)[0]
                    .as<std::int64_t>();
        else
          tx.exec_params(
              "UPDATE products SET name = $2, code = $3, description = $4, price_per = $5, price_cents = $6, vat_percentage = $7, "
              "active = $8, updated_at = now() WHERE id = $1",
              *id, name, code, description, price_per, price_cents, vat, active);
      },
      "name", "a product with this name or code exists already");
  return out;
}

// --- orders ----------------------------------------------------------------------------------

constexpr const char* kOrderColumns =
    "o.id, o.contact_id, o.product_id, p.administration_id, o.quantity, to_char(o.start_date, 'YYYY-MM-DD'), "
    "to_char(o.end_date, 'YYYY-MM-DD'), o.status, " MG_TIME("o.created_at") ", " MG_TIME("o.updated_at");
constexpr const char* kOrderFrom = " FROM orders o JOIN products p ON p.id = o.product_id";
#undef MG_TIME

json::object order_json(const pqxx::row& r) {
  return {{"id", r[0].as<std::int64_t>()},
          {"contact_id", r[1].as<std::int64_t>()},
          {"product_id", r[2].as<std::int64_t>()},
          {"administration_id", r[3].as<std::int64_t>()},
          {"quantity", r[4].as<std::int64_t>()},
          {"start_date", r[5].c_str()},
          {"end_date", nullable_text(r[6])},
          {"status", r[7].c_str()},
          {"created_at", r[8].c_str()},
          {"updated_at", r[9].c_str()}};
}

json::object load_order(pqxx::work& tx, std::int64_t id) {
  auto r = tx.exec_params(std::string("SELECT ") + kOrderColumns + kOrderFrom + " WHERE o.id = $1", id);
  if (r.empty()) throw ApiError(404, "not_found", "no order with id " + std::to_string(id));
  return order_json(r[0]);
}

struct OrderInput {
  std::optional<std::int64_t> contact_id, product_id, quantity;
  std::optional<std::string> start_date, status;
  std::optional<std::optional<std::string>> end_date;
};

OrderInput read_order_input(const JsonInput& in, bool creating) {
  in.only({"contact_id", "product_id", "quantity", "start_date", "end_date", "status"});
  OrderInput o;
  o.contact_id = in.integer("contact_id", 1, INT64_MAX, creating);
  o.product_id = in.integer("product_id", 1, INT64_MAX, creating);
  o.quantity = in.integer("quantity", 1, 1000000);
  o.start_date = date_field(in, "start_date", creating);
  if (in.has("end_date")) o.end_date = in.raw("end_date")->is_null() ? std::optional<std::string>() : date_field(in, "end_date");
  o.status = in.text("status", false, 20);
  if (o.status && *o.status != "concept" && *o.status != "active" && *o.status != "terminated")
    invalid("status", "status must be concept, active or terminated");
  return o;
}

int status_rank(const std::string& s) { return s == "concept" ? 0 : s == "active" ? 1 : 2; }

std::int64_t write_order(pqxx::work& tx, const OrderInput& in, std::optional<std::int64_t> id) {
  json::object cur = id ? load_order(tx, *id) : json::object{};
  const std::string old_status = id ? str_of(cur, "status") : "concept";
  const std::string status = in.status.value_or(old_status);
  if (id) {
    if (in.contact_id && *in.contact_id != cur.at("contact_id").as_int64())
      invalid("contact_id", "an order cannot move to another contact; terminate it and create a new one", "immutable");
    if (in.product_id && *in.product_id != cur.at("product_id").as_int64() && old_status != "concept")
      invalid("product_id", "the product of an order can only change while it is a concept", "immutable");
    if (status_rank(status) < status_rank(old_status))
      invalid("status", "an order cannot go back from " + old_status + " to " + status + " (concept -> active -> terminated)",
              "invalid_transition");
  }
  const std::int64_t contact_id = in.contact_id.value_or(cur.contains("contact_id") ? cur.at("contact_id").as_int64() : 0);
  const std::int64_t product_id = in.product_id.value_or(cur.contains("product_id") ? cur.at("product_id").as_int64() : 0);
  const std::int64_t quantity = in.quantity.value_or(cur.contains("quantity") ? cur.at("quantity").as_int64() : 1);
  const std::string start_date = in.start_date.value_or(cur.contains("start_date") ? str_of(cur, "start_date") : "");
  const std::optional<std::string> end_date =
      in.end_date ? *in.end_date : cur.contains("end_date") && !cur.at("end_date").is_null() ? std::optional(str_of(cur, "end_date")) : std::nullopt;

  // ISO dates compare as text.
  if (end_date && *end_date < start_date)
    invalid(in.end_date ? "end_date" : "start_date", "end_date (" + *end_date + ") is before start_date (" + start_date + ")");
  if (status == "terminated" && !end_date) invalid("end_date", "a terminated order needs an end_date", "required");
  if (!id) {
    auto c = tx.exec_params("SELECT archived FROM contacts WHERE id = $1", contact_id);
    if (c.empty()) invalid("contact_id", "contact_id: no contact with id " + std::to_string(contact_id));
    if (c[0][0].as<bool>()) invalid("contact_id", "contact_id: contact " + std::to_string(contact_id) + " is archived");
  }
  if (!id || (in.product_id && *in.product_id != cur.at("product_id").as_int64())) {
    auto p = tx.exec_params(
        "SELECT p.active, a.active FROM products p JOIN administrations a ON a.id = p.administration_id WHERE p.id = $1", product_id);
    if (p.empty()) invalid("product_id", "product_id: no product with id " + std::to_string(product_id));
    if (!p[0][0].as<bool>()) invalid("product_id", "product_id: product " + std::to_string(product_id) + " is deactivated; it cannot be ordered");
    if (!p[0][1].as<bool>())
      invalid("product_id", "product_id: product " + std::to_string(product_id) + " belongs to a deactivated administration");
  }
  if (!id)
    return tx.exec_params1(
                 "INSERT INTO orders (contact_id, product_id, quantity, start_date, end_date, status) "
                 "VALUES ($1, $2, $3, $4::date, $5::date, $6) RETURNING id",
                 contact_id, product_id, quantity, start_date, end_date, status)[0]
        .as<std::int64_t>();
  tx.exec_params(
      "UPDATE orders SET product_id = $2, quantity = $3, start_date = $4::date, end_date = $5::date, status = $6, updated_at = now() "
      "WHERE id = $1",
      *id, product_id, quantity, start_date, end_date, status);
  return *id;
}

const char* status_action(const json::object& before, const json::object& after) {
  if (before.at("status") == after.at("status")) return "update";
  return after.at("status").as_string() == "active" ? "activate" : after.at("status").as_string() == "terminated" ? "terminate" : "update";
}

const char* active_action(const json::object& before, const json::object& after) {
  if (before.at("active") == after.at("active")) return "update";
  return after.at("active").as_bool() ? "reactivate" : "deactivate";
}

}  // namespace

void register_administration_routes(Api& api) {
  Services& s = api.services();

  // --- templates -------------------------------------------------------------------------------
  api.add("GET", "/api/v1/templates", kRead, [&s](HttpRequest& req, const Principal&) -> awaitable<HttpResponse> {
    const Page page = page_of(req);
    const std::string q = query_text(req, "q"), active = query_bool(req, "active");
    auto op = store_transact(s.store, [=](pqxx::work& tx) {
      json::array a;
      for (const auto& r : tx.exec_params(std::string("SELECT ") + kTemplateListColumns +
                                              " FROM templates t WHERE t.id > $1 AND ($2 = '' OR t.name ILIKE '%' || $2 || '%' "
                                              "OR t.subject ILIKE '%' || $2 || '%') AND ($3 = '' OR t.active = ($3 = 'true')) "
                                              "ORDER BY t.id LIMIT $4",
                                          page.after_id, q, active, page.limit + 1))
        a.emplace_back(template_json(r, false));
      return a;
    });
    auto items = co_await std::move(op);
    co_return id_page(std::move(items), page);
  });

  api.add("GET", "/api/v1/templates/{id}", kRead, [&s](HttpRequest& req, const Principal&) -> awaitable<HttpResponse> {
    const auto id = path_id(req);
    auto op = store_transact(s.store, [id](pqxx::work& tx) { return load_template(tx, id); });
    co_return json_response(200, co_await std::move(op));
  });

  api.add("POST", "/api/v1/templates", kAdmin, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    const auto f = read_template_fields(JsonInput(req.body), true);
    const std::string html = f.html_body.value_or(""), text = f.text_body.value_or("");
    if (html.empty() && text.empty()) invalid("text_body", "a template needs a text_body, an html_body or both", "required");
    const auto fields = template_merge_fields(*f.subject, html, text);
    const Actor actor = p.actor();
    auto op = store_transact(s.store, [=](pqxx::work& tx) {
      check_template_name_free(tx, *f.name, 0);
      std::int64_t id = 0;
      unique_or_409(
          [&] {
            id = tx.exec_params1(
                       "INSERT INTO templates (name, subject, html_body, text_body, merge_fields, active) "
                       "VALUES ($1, $2, $3, $4, $5::text[], $6) RETURNING id",
                       *f.name, *f.subject, html, text, pg_text_array(fields), f.active.value_or(true))[0]
                     .as<std::int64_t>();
          },
          "name", "a template named '" + *f.name + "' exists already");
      auto t = load_template(tx, id);
      audit_write(tx, actor, "template", std::to_string(id), "create", audit_diff({}, t, {"merge_fields"}));
      return t;
    });
    co_return json_response(201, co_await std::move(op));
  });

  api.add("PATCH", "/api/v1/templates/{id}", kAdmin, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    const auto id = path_id(req);
    const auto f = read_template_fields(JsonInput(req.body), false);
    const Actor actor = p.actor();
    auto op = store_transact(s.store, [=](pqxx::work& tx) {
      auto before = load_template(tx, id);
      const std::string name = f.name.value_or(str_of(before, "name")), subject = f.subject.value_or(str_of(before, "subject")),
                        html = f.html_body.value_or(str_of(before, "html_body")), text = f.text_body.value_or(str_of(before, "text_body"));
      if (html.empty() && text.empty())
        invalid(f.text_body ? "text_body" : "html_body", "a template needs a text_body, an html_body or both", "required");
      const auto fields = template_merge_fields(subject, html, text);
      if (f.name) check_template_name_free(tx, name, id);
      if (f.active == false) {
        auto users = tx.exec_params(
            "SELECT string_agg(name, ', ' ORDER BY id) FROM administrations WHERE active AND $1 IN "
            "(invoice_transfer_template_id, invoice_direct_debit_template_id, reminder_template_id, dunning_template_id)",
            id);
        if (!users[0][0].is_null())
          throw ApiError(409, "in_use", "the template is used by the administration(s) " + users[0][0].as<std::string>() +
                                            "; choose another template there first", "active");
      }
      unique_or_409(
          [&] {
            tx.exec_params(
                "UPDATE templates SET name = $2, subject = $3, html_body = $4, text_body = $5, merge_fields = $6::text[], "
                "active = $7, updated_at = now() WHERE id = $1",
                id, name, subject, html, text, pg_text_array(fields), f.active.value_or(before.at("active").as_bool()));
          },
          "name", "a template named '" + name + "' exists already");
      auto after = load_template(tx, id);
      auto changes = audit_diff(before, after, {"merge_fields"});
      if (!changes.empty()) audit_write(tx, actor, "template", std::to_string(id), active_action(before, after), changes);
      return after;
    });
    co_return json_response(200, co_await std::move(op));
  });

  // --- administrations -------------------------------------------------------------------------
  api.add("GET", "/api/v1/administrations", kRead, [&s](HttpRequest& req, const Principal&) -> awaitable<HttpResponse> {
    const Page page = page_of(req);
    const std::string q = query_text(req, "q"), active = query_bool(req, "active");
    auto op = store_transact(s.store, [=](pqxx::work& tx) {
      json::array a;
      for (const auto& r : tx.exec_params(std::string("SELECT ") + kAdministrationColumns +
                                              " FROM administrations a WHERE a.id > $1 AND ($2 = '' OR a.name ILIKE '%' || $2 || '%') "
                                              "AND ($3 = '' OR a.active = ($3 = 'true')) ORDER BY a.id LIMIT $4",
                                          page.after_id, q, active, page.limit + 1))
        a.emplace_back(administration_json(r));
      return a;
    });
    auto items = co_await std::move(op);
    co_return id_page(std::move(items), page);
  });

  api.add("GET", "/api/v1/administrations/{id}", kRead, [&s](HttpRequest& req, const Principal&) -> awaitable<HttpResponse> {
    const auto id = path_id(req);
    auto op = store_transact(s.store, [id](pqxx::work& tx) { return load_administration(tx, id); });
    co_return json_response(200, co_await std::move(op));
  });

  api.add("POST", "/api/v1/administrations", kAdmin, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    const auto in = read_administration_input(JsonInput(req.body), true);
    const Actor actor = p.actor();
    auto op = store_transact(s.store, [=](pqxx::work& tx) {
      const auto id = write_administration(tx, in, std::nullopt);
      auto a = load_administration(tx, id);
      audit_write(tx, actor, "administration", std::to_string(id), "create", audit_diff({}, a, {"effective_sender_mailbox_id"}));
      return a;
    });
    co_return json_response(201, co_await std::move(op));
  });

  api.add("PATCH", "/api/v1/administrations/{id}", kAdmin, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    const auto id = path_id(req);
    const auto in = read_administration_input(JsonInput(req.body), false);
    const Actor actor = p.actor();
    auto op = store_transact(s.store, [=](pqxx::work& tx) {
      auto before = load_administration(tx, id);
      write_administration(tx, in, id);
      auto after = load_administration(tx, id);
      auto changes = audit_diff(before, after, {"effective_sender_mailbox_id"});
      if (!changes.empty()) audit_write(tx, actor, "administration", std::to_string(id), active_action(before, after), changes);
      return after;
    });
    co_return json_response(200, co_await std::move(op));
  });

  // --- products --------------------------------------------------------------------------------
  api.add("GET", "/api/v1/products", kRead, [&s](HttpRequest& req, const Principal&) -> awaitable<HttpResponse> {
    const Page page = page_of(req);
    const std::string q = query_text(req, "q"), active = query_bool(req, "active");
    const auto administration = query_id(req, "administration_id");
    auto op = store_transact(s.store, [=](pqxx::work& tx) {
      json::array a;
      for (const auto& r : tx.exec_params(std::string("SELECT ") + kProductColumns +
                                              " FROM products p WHERE p.id > $1 AND ($2 = '' OR p.name ILIKE '%' || $2 || '%' "
                                              "OR p.code ILIKE '%' || $2 || '%') AND ($3 = '' OR p.active = ($3 = 'true')) "
                                              "AND ($4 = 0 OR p.administration_id = $4) ORDER BY p.id LIMIT $5",
                                          page.after_id, q, active, administration, page.limit + 1))
        a.emplace_back(product_json(r));
      return a;
    });
    auto items = co_await std::move(op);
    co_return id_page(std::move(items), page);
  });

  api.add("GET", "/api/v1/products/{id}", kRead, [&s](HttpRequest& req, const Principal&) -> awaitable<HttpResponse> {
    const auto id = path_id(req);
    auto op = store_transact(s.store, [id](pqxx::work& tx) { return load_product(tx, id); });
    co_return json_response(200, co_await std::move(op));
  });

  api.add("POST", "/api/v1/products", kAdmin, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    const auto in = read_product_input(JsonInput(req.body), true);
    const Actor actor = p.actor();
    auto op = store_transact(s.store, [=](pqxx::work& tx) {
      const auto id = write_product(tx, in, std::nullopt);
      auto product = load_product(tx, id);
      audit_write(tx, actor, "product", std::to_string(id), "create", audit_diff({}, product, {}));
      return product;
    });
    co_return json_response(201, co_await std::move(op));
  });

  api.add("PATCH", "/api/v1/products/{id}", kAdmin, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    const auto id = path_id(req);
    const auto in = read_product_input(JsonInput(req.body), false);
    const Actor actor = p.actor();
    auto op = store_transact(s.store, [=](pqxx::work& tx) {
      auto before = load_product(tx, id);
      write_product(tx, in, id);
      auto after = load_product(tx, id);
      auto changes = audit_diff(before, after, {});
      if (!changes.empty()) audit_write(tx, actor, "product", std::to_string(id), active_action(before, after), changes);
      return after;
    });
    co_return json_response(200, co_await std::move(op));
  });

  // --- orders ----------------------------------------------------------------------------------
  api.add("GET", "/api/v1/orders", kRead, [&s](HttpRequest& req, const Principal&) -> awaitable<HttpResponse> {
    const Page page = page_of(req);
    const auto contact = query_id(req, "contact_id"), product = query_id(req, "product_id"),
               administration = query_id(req, "administration_id");
    const std::string status = query_text(req, "status");
    if (!status.empty() && status != "concept" && status != "active" && status != "terminated")
      invalid("status", "status must be concept, active or terminated");
    auto op = store_transact(s.store, [=](pqxx::work& tx) {
      json::array a;
      for (const auto& r : tx.exec_params(std::string("SELECT ") + kOrderColumns + kOrderFrom +
                                              " WHERE o.id > $1 AND ($2 = 0 OR o.contact_id = $2) AND ($3 = 0 OR o.product_id = $3) "
                                              "AND ($4 = 0 OR p.administration_id = $4) AND ($5 = '' OR o.status = $5) "
                                              "ORDER BY o.id LIMIT $6",
                                          page.after_id, contact, product, administration, status, page.limit + 1))
        a.emplace_back(order_json(r));
      return a;
    });
    auto items = co_await std::move(op);
    co_return id_page(std::move(items), page);
  });

  api.add("GET", "/api/v1/orders/{id}", kRead, [&s](HttpRequest& req, const Principal&) -> awaitable<HttpResponse> {
    const auto id = path_id(req);
    auto op = store_transact(s.store, [id](pqxx::work& tx) { return load_order(tx, id); });
    co_return json_response(200, co_await std::move(op));
  });

  api.add("POST", "/api/v1/orders", kCrmWrite, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    const auto in = read_order_input(JsonInput(req.body), true);
    const Actor actor = p.actor();
    auto op = store_transact(s.store, [=](pqxx::work& tx) {
      const auto id = write_order(tx, in, std::nullopt);
      auto order = load_order(tx, id);
      audit_write(tx, actor, "order", std::to_string(id), "create", audit_diff({}, order, {"administration_id"}));
      return order;
    });
    co_return json_response(201, co_await std::move(op));
  });

  api.add("PATCH", "/api/v1/orders/{id}", kCrmWrite, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    const auto id = path_id(req);
    const auto in = read_order_input(JsonInput(req.body), false);
    const Actor actor = p.actor();
    auto op = store_transact(s.store, [=](pqxx::work& tx) {
      auto before = load_order(tx, id);
      write_order(tx, in, id);
      auto after = load_order(tx, id);
      auto changes = audit_diff(before, after, {"administration_id"});
      if (!changes.empty()) audit_write(tx, actor, "order", std::to_string(id), status_action(before, after), changes);
      return after;
    });
    co_return json_response(200, co_await std::move(op));
  });
}

}  // namespace mailgate
