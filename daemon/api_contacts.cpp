// /api/v1: CRM contacts and groups. Every change is audited (diff_objects) in its own transaction.
//
// Contacts
// - type person | organisation, fixed at creation. A person has name parts (title, initials,
//   first_name, infix = tussenvoegsel, last_name; a first or last name is required) and may have
//   a date_of_birth; an organisation has organisation_name and neither of those.
// - emails: any number, exactly one primary (the first when none is marked). Each is stored in
//   normal form (rules/address.hpp: trimmed, domain lower-cased, IDN -> punycode) with its
//   email_match_key; ?email= finds contacts by that key, so the lookup is case-insensitive.
//   The list is replaced as a whole: POST (emails) or PUT /contacts/{id}/emails, not PATCH.
//   An address new to the contact links the stored messages that carry it (store/messages.hpp).
// - Dutch postcodes (country NL, the default) are normalised to "1234AB"; other countries' are
//   kept as typed.
// - free_fields: {"key": "text"}, at most 50 keys [a-z0-9_]{1,64}, values single-line, at most
//   1000 bytes. PATCH merges them (RFC 7396: a null value removes the key).
// - Contacts are never deleted. PATCH {"archived": true} archives one: it leaves the default
//   list and every group's resolution (its rows, memberships and history stay); GET by id and
//   ?archived=true still show it, and PATCH {"archived": false} brings it back.
//
// Groups (seed: static, dynamic, composite); kind is fixed at creation.
// - static: member contacts, replaced with PUT /groups/{id}/members {"members": [contact ids]}.
// - dynamic: a filter (rules/groups.hpp), evaluated in SQL on every resolution (store/groups.hpp).
// - composite: union | intersection of member groups of any kind ("member_groups"; PUT
//   /groups/{id}/members takes group ids for a composite group).
// - A group never contains itself: a change that would close a cycle through composite members
//   or dynamic member_of conditions is refused with 422 group_cycle naming the path.
// - visible_on_portal ("zichtbaar op portaal"); changeable_on_portal ("veranderen op portaal")
//   only for a static group that is visible.
#include <chrono>
#include <map>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <pqxx/pqxx>

#include "daemon/api.hpp"
#include "rules/address.hpp"
#include "rules/groups.hpp"
#include "store/groups.hpp"
#include "store/messages.hpp"
#include "store/run.hpp"
#include "store/sql.hpp"

namespace mailgate {

namespace json = boost::json;
using boost::asio::awaitable;

namespace {

constexpr std::size_t kMaxEmails = 20, kMaxPhones = 10, kMaxFreeFields = 50, kMaxFreeValue = 1000;
constexpr std::size_t kMaxGroupMembers = 50000;

constexpr const char* kTimestamp = "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'";

// --- shared input helpers ------------------------------------------------------------------

// A string inside a nested value (phones, emails, filters): trimmed, single-line, bounded.
std::string nested_text(const json::value& v, const std::string& field, std::size_t max_length, bool required = false) {
  if (!v.is_string()) invalid(field, field + " must be a string");
  std::string s = trim(v.as_string());
  if (has_line_break(s)) invalid(field, field + " must not contain a line break");
  if (s.size() > max_length) invalid(field, field + " is longer than " + std::to_string(max_length) + " bytes");
  if (required && s.empty()) invalid(field, field + " must not be empty", "required");
  return s;
}

void only_keys(const json::object& o, const std::string& prefix, const std::set<std::string>& known) {
  for (const auto& [k, v] : o)
    if (!known.count(std::string(k))) invalid(prefix + "." + std::string(k), "unknown field " + prefix + "." + std::string(k), "unknown_field");
}

// --- contacts ------------------------------------------------------------------------------

struct EmailInput {
  std::string address;  // normal form
  bool primary = false;
};

// The stored state of a contact, as the API changes it.
struct Contact {
  std::string type = "person";
  std::string title, initials, first_name, infix, last_name, organisation_name;
  json::array phones;
  std::string street, house_number, house_number_addition, postcode, city, country = "NL";
  std::optional<std::string> date_of_birth;  // YYYY-MM-DD
  json::object free_fields;
  bool archived = false;
};

// What a request asks to change; absent fields stay as they are.
struct ContactInput {
  std::optional<std::string> type, title, initials, first_name, infix, last_name, organisation_name;
  std::optional<json::array> phones;
  std::optional<std::string> street, house_number, house_number_addition, postcode, city, country;
  bool date_of_birth_given = false;
  std::optional<std::string> date_of_birth;
  std::optional<json::object> free_fields;  // merge patch; null values remove keys
  bool free_fields_clear = false;           // "free_fields": null
  std::optional<bool> archived;
  std::optional<std::vector<EmailInput>> emails;
};

std::vector<EmailInput> read_emails(const JsonInput& in, const std::string& key) {
  const json::value* v = in.raw(key);
  if (!v || v->is_null()) return {};
  if (!v->is_array()) invalid(key, key + " must be a list of addresses");
  const auto& a = v->as_array();
  if (a.size() > kMaxEmails) invalid(key, "a contact has at most " + std::to_string(kMaxEmails) + " e-mail addresses");
  std::vector<EmailInput> out;
  std::set<std::string> keys;
  int primaries = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const std::string at = key + "[" + std::to_string(i) + "]";
    EmailInput e;
    std::string field = at;
    std::string raw;
    if (a[i].is_string()) {
      raw = nested_text(a[i], at, 254, true);
    } else if (a[i].is_object()) {
      const auto& o = a[i].as_object();
      only_keys(o, at, {"address", "primary"});
      field = at + ".address";
      if (!o.contains("address")) invalid(field, field + " is required", "required");
      raw = nested_text(o.at("address"), field, 254, true);
      if (const auto* p = o.if_contains("primary"); p && !p->is_null()) {
        if (!p->is_bool()) invalid(at + ".primary", at + ".primary must be true or false");
        e.primary = p->as_bool();
      }
    } else {
      invalid(at, at + " must be an address or {\"address\", \"primary\"}");
    }
    auto n = normalize_email(raw);
    if (auto* err = std::get_if<AddressError>(&n)) invalid(field, field + ": " + err->reason, "invalid_address");
    e.address = std::get<std::string>(n);
    if (!keys.insert(email_match_key(e.address)).second) invalid(field, field + " is listed twice", "duplicate");
    primaries += e.primary;
    out.push_back(std::move(e));
  }
  if (primaries > 1) invalid(key, "only one e-mail address can be primary", "primary_count");
  if (!out.empty() && primaries == 0) out.front().primary = true;
  return out;
}

json::array read_phones(const json::value& v) {
  if (v.is_null()) return {};
  if (!v.is_array()) invalid("phones", "phones must be a list of {\"number\", \"label\"}");
  if (v.as_array().size() > kMaxPhones) invalid("phones", "a contact has at most " + std::to_string(kMaxPhones) + " phone numbers");
  json::array out;
  for (std::size_t i = 0; i < v.as_array().size(); ++i) {
    const auto& item = v.as_array()[i];
    const std::string at = "phones[" + std::to_string(i) + "]";
    std::string number, label;
    std::string field = at;
    if (item.is_string()) {
      number = nested_text(item, at, 40, true);
    } else if (item.is_object()) {
      const auto& o = item.as_object();
      only_keys(o, at, {"number", "label"});
      field = at + ".number";
      if (!o.contains("number")) invalid(field, field + " is required", "required");
      number = nested_text(o.at("number"), field, 40, true);
      if (const auto* l = o.if_contains("label"); l && !l->is_null()) label = nested_text(*l, at + ".label", 50);
    } else {
      invalid(at, at + " must be a number or {\"number\", \"label\"}");
    }
    if (number.find_first_not_of("0123456789 +-()./") != std::string::npos ||
        number.find_first_of("0123456789") == std::string::npos)
      invalid(field, field + " is not a phone number (digits, spaces and + - ( ) . /)");
    out.emplace_back(json::object{{"number", number}, {"label", label}});
  }
  return out;
}

// "YYYY-MM-DD", a real calendar date from 1900 up to today.
std::string read_date(const json::value& v, const std::string& field) {
  const std::string s = nested_text(v, field, 10, true);
  auto digits = [&](std::size_t from, std::size_t n) {
    for (std::size_t i = from; i < from + n; ++i)
      if (!std::isdigit(static_cast<unsigned char>(s[i]))) return false;
    return true;
  };
  if (s.size() != 10 || s[4] != '-' || s[7] != '-' || !digits(0, 4) || !digits(5, 2) || !digits(8, 2))
    invalid(field, field + " must be a date like 1980-04-23");
  using namespace std::chrono;
  const year_month_day ymd{year{std::stoi(s.substr(0, 4))}, month{static_cast<unsigned>(std::stoi(s.substr(5, 2)))},
                           day{static_cast<unsigned>(std::stoi(s.substr(8, 2)))}};
  if (!ymd.ok()) invalid(field, field + " is not a date in the calendar");
  if (ymd.year() < year{1900}) invalid(field, field + " must not be before 1900");
  if (sys_days{ymd} > floor<days>(system_clock::now())) invalid(field, field + " must not be in the future");
  return s;
}

json::object read_free_fields(const json::value& v, bool patch) {
  if (!v.is_object()) invalid("free_fields", "free_fields must be an object of text values");
  json::object out;
  for (const auto& [k, value] : v.as_object()) {
    const std::string key(k);
    const std::string field = "free_fields." + key;
    if (key.empty() || key.size() > 64 || key.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") != std::string::npos)
      invalid(field, "free field names are 1 to 64 characters a-z, 0-9 and _");
    if (value.is_null()) {
      if (patch) out[key] = nullptr;
      continue;
    }
    std::string s = nested_text(value, field, kMaxFreeValue);
    if (s.find('\0') != std::string::npos) invalid(field, field + " must not contain a NUL character");
    out[key] = std::move(s);
  }
  return out;
}

ContactInput read_contact_input(const JsonInput& in, bool creating) {
  std::set<std::string> known = {"type", "title", "initials", "first_name", "infix", "last_name", "organisation_name", "phones",
                                 "street", "house_number", "house_number_addition", "postcode", "city", "country",
                                 "date_of_birth", "free_fields", "archived"};
  if (creating) known.insert("emails");
  if (!creating && in.has("emails")) invalid("emails", "e-mail addresses are replaced with PUT /api/v1/contacts/{id}/emails");
  in.only(known);
  ContactInput f;
  f.type = in.text("type", creating, 20);
  if (f.type && *f.type != "person" && *f.type != "organisation") invalid("type", "type is person or organisation");
  f.title = in.text("title", false, 50);
  f.initials = in.text("initials", false, 20);
  f.first_name = in.text("first_name", false, 100);
  f.infix = in.text("infix", false, 30);
  f.last_name = in.text("last_name", false, 100);
  f.organisation_name = in.text("organisation_name", false, 200);
  if (const auto* v = in.raw("phones")) f.phones = read_phones(*v);
  f.street = in.text("street", false, 200);
  f.house_number = in.text("house_number", false, 20);
  f.house_number_addition = in.text("house_number_addition", false, 20);
  f.postcode = in.text("postcode", false, 20);
  f.city = in.text("city", false, 100);
  f.country = in.text("country", false, 2);
  if (f.country) {
    for (auto& ch : *f.country) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    if (f.country->size() != 2 || !std::isupper(static_cast<unsigned char>((*f.country)[0])) ||
        !std::isupper(static_cast<unsigned char>((*f.country)[1])))
      invalid("country", "country is a two-letter ISO 3166 code (NL, BE, DE, ...)");
  }
  if (const auto* v = in.raw("date_of_birth")) {
    f.date_of_birth_given = true;
    if (!v->is_null() && !(v->is_string() && trim(v->as_string()).empty())) f.date_of_birth = read_date(*v, "date_of_birth");
  }
  if (const auto* v = in.raw("free_fields")) {
    if (v->is_null())
      f.free_fields_clear = true;
    else
      f.free_fields = read_free_fields(*v, !creating);
  }
  f.archived = in.boolean("archived");
  if (creating) f.emails = read_emails(in, "emails");
  return f;
}

// Applies the input to a contact and checks the result as a whole; names the offending field.
Contact apply_contact_input(Contact c, const ContactInput& f, bool creating) {
  if (f.type) {
    if (!creating && *f.type != c.type) invalid("type", "a contact's type cannot change after creation", "immutable");
    c.type = *f.type;
  }
  auto set = [](std::string& target, const std::optional<std::string>& v) {
    if (v) target = *v;
  };
  set(c.title, f.title);
  set(c.initials, f.initials);
  set(c.first_name, f.first_name);
  set(c.infix, f.infix);
  set(c.last_name, f.last_name);
  set(c.organisation_name, f.organisation_name);
  if (f.phones) c.phones = *f.phones;
  set(c.street, f.street);
  set(c.house_number, f.house_number);
  set(c.house_number_addition, f.house_number_addition);
  set(c.postcode, f.postcode);
  set(c.city, f.city);
  set(c.country, f.country);
  if (f.date_of_birth_given) c.date_of_birth = f.date_of_birth;
  if (f.free_fields_clear) c.free_fields.clear();
  if (f.free_fields)
    for (const auto& [k, v] : *f.free_fields) {
      if (v.is_null())
        c.free_fields.erase(k);
      else
        c.free_fields[k] = v;
    }
  if (f.archived) c.archived = *f.archived;

  if (c.type == "person") {
    if (c.first_name.empty() && c.last_name.empty()) invalid("last_name", "a person needs a last name or a first name", "required");
    if (!c.organisation_name.empty())
      invalid("organisation_name", "organisation_name belongs to an organisation contact; this contact is a person");
  } else {
    if (c.organisation_name.empty()) invalid("organisation_name", "an organisation needs an organisation_name", "required");
    const std::vector<std::pair<const char*, const std::string*>> person_only = {
        {"title", &c.title}, {"initials", &c.initials}, {"first_name", &c.first_name}, {"infix", &c.infix}, {"last_name", &c.last_name}};
    for (const auto& [field, value] : person_only)
      if (!value->empty()) invalid(field, std::string(field) + " belongs to a person; this contact is an organisation");
    if (c.date_of_birth) invalid("date_of_birth", "an organisation has no date of birth");
  }
  if (c.country == "NL" && !c.postcode.empty()) {
    const std::string normal = normalize_postcode(c.postcode);
    if (normal.empty()) invalid("postcode", "postcode is not a Dutch postcode (1234 AB)");
    c.postcode = normal;
  }
  if (c.free_fields.size() > kMaxFreeFields) invalid("free_fields", "a contact has at most " + std::to_string(kMaxFreeFields) + " free fields");
  return c;
}

const std::string kContactColumns = std::string(
    "c.id, c.type, c.title, c.initials, c.first_name, c.infix, c.last_name, c.organisation_name, c.phones::text, "
    "c.street, c.house_number, c.house_number_addition, c.postcode, c.city, c.country, to_char(c.date_of_birth, 'YYYY-MM-DD'), "
    "c.free_fields::text, c.archived, to_char(c.created_at AT TIME ZONE 'UTC', ") + kTimestamp + "), "
    "to_char(c.updated_at AT TIME ZONE 'UTC', " + kTimestamp + "), "
    "coalesce((SELECT json_agg(json_build_object('address', e.address, 'primary', e.is_primary) ORDER BY e.position) "
    "          FROM contact_emails e WHERE e.contact_id = c.id), '[]')::text";

std::string display_name(const json::object& o) {
  if (o.at("type").as_string() == "organisation") return std::string(o.at("organisation_name").as_string());
  std::string name;
  const auto& first = o.at("first_name").as_string().empty() ? o.at("initials").as_string() : o.at("first_name").as_string();
  for (const auto* part : {&first, &o.at("infix").as_string(), &o.at("last_name").as_string()})
    if (!part->empty()) name += (name.empty() ? "" : " ") + std::string(*part);
  return name;
}

json::object contact_json(const pqxx::row& r) {
  json::object o{{"id", r[0].as<std::int64_t>()},
                 {"type", r[1].c_str()},
                 {"title", r[2].c_str()},
                 {"initials", r[3].c_str()},
                 {"first_name", r[4].c_str()},
                 {"infix", r[5].c_str()},
                 {"last_name", r[6].c_str()},
                 {"organisation_name", r[7].c_str()},
                 {"display_name", ""},
                 {"emails", json::parse(r[20].c_str())},
                 {"primary_email", nullptr},
                 {"phones", json::parse(r[8].c_str())},
                 {"street", r[9].c_str()},
                 {"house_number", r[10].c_str()},
                 {"house_number_addition", r[11].c_str()},
                 {"postcode", r[12].c_str()},
                 {"city", r[13].c_str()},
                 {"country", r[14].c_str()},
                 {"date_of_birth", r[15].is_null() ? json::value(nullptr) : json::value(r[15].c_str())},
                 {"free_fields", json::parse(r[16].c_str())},
                 {"archived", r[17].as<bool>()},
                 {"created_at", r[18].c_str()},
                 {"updated_at", r[19].c_str()}};
  o["display_name"] = display_name(o);
  for (const auto& e : o.at("emails").as_array())
    if (e.at("primary").as_bool()) o["primary_email"] = e.at("address");
  return o;
}

json::object load_contact(pqxx::work& tx, std::int64_t id) {
  auto r = tx.exec_params("SELECT " + kContactColumns + " FROM contacts c WHERE c.id = $1", id);
  if (r.empty()) throw ApiError(404, "not_found", "no contact with id " + std::to_string(id));
  return contact_json(r[0]);
}

Contact contact_from_json(const json::object& o) {
  Contact c;
  auto s = [&](const char* k) { return std::string(o.at(k).as_string()); };
  c.type = s("type");
  c.title = s("title");
  c.initials = s("initials");
  c.first_name = s("first_name");
  c.infix = s("infix");
  c.last_name = s("last_name");
  c.organisation_name = s("organisation_name");
  c.phones = o.at("phones").as_array();
  c.street = s("street");
  c.house_number = s("house_number");
  c.house_number_addition = s("house_number_addition");
  c.postcode = s("postcode");
  c.city = s("city");
  c.country = s("country");
  if (o.at("date_of_birth").is_string()) c.date_of_birth = s("date_of_birth");
  c.free_fields = o.at("free_fields").as_object();
  c.archived = o.at("archived").as_bool();
  return c;
}

std::int64_t contact_write(pqxx::work& tx, const Contact& c, std::int64_t id) {
  const std::string phones = json::serialize(c.phones), free = json::serialize(c.free_fields);
  if (id == 0)
    return tx.exec_params1(
        "INSERT INTO contacts (type, title, initials, first_name, infix, last_name, organisation_name, phones, street, house_number, "
        "house_number_addition, postcode, city, country, date_of_birth, free_fields, archived) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10, $11, $12, $13, $14, $15::date, $16::jsonb, $17) RETURNING id",
        c.type, c.title, c.initials, c.first_name, c.infix, c.last_name, c.organisation_name, phones, c.street, c.house_number,
        c.house_number_addition, c.postcode, c.city, c.country, c.date_of_birth, free, c.archived)[0].as<std::int64_t>();
  tx.exec_params(
      "UPDATE contacts SET title = $2, initials = $3, first_name = $4, infix = $5, last_name = $6, organisation_name = $7, "
      "phones = $8::jsonb, street = $9, house_number = $10, house_number_addition = $11, postcode = $12, city = $13, country = $14, "
      "date_of_birth = $15::date, free_fields = $16::jsonb, archived = $17, updated_at = now() WHERE id = $1",
      id, c.title, c.initials, c.first_name, c.infix, c.last_name, c.organisation_name, phones, c.street, c.house_number,
      c.house_number_addition, c.postcode, c.city, c.country, c.date_of_birth, free, c.archived);
  return id;
}

// Replaces the contact's addresses; messages carrying an address the contact did not have yet are
// linked to it (store/messages.hpp).
void contact_emails_replace(pqxx::work& tx, std::int64_t id, const std::vector<EmailInput>& emails) {
  std::set<std::string> had;
  for (const auto& r : tx.exec_params("SELECT email_match_key FROM contact_emails WHERE contact_id = $1", id)) had.insert(r[0].c_str());
  tx.exec_params("DELETE FROM contact_emails WHERE contact_id = $1", id);
  std::vector<std::string> gained;
  for (std::size_t i = 0; i < emails.size(); ++i) {
    const std::string key = email_match_key(emails[i].address);
    tx.exec_params(
        "INSERT INTO contact_emails (contact_id, address, email_match_key, is_primary, position) VALUES ($1, $2, $3, $4, $5)", id,
        emails[i].address, key, emails[i].primary, static_cast<int>(i));
    if (!had.count(key)) gained.push_back(key);
  }
  link_earlier_messages(tx, id, gained);
}

std::vector<FieldChange> changes_without_timestamps(const json::object& before, const json::object& after) {
  auto changes = diff_objects(before, after);
  std::erase_if(changes, [](const FieldChange& c) { return c.field == "updated_at"; });
  return changes;
}

// A page of contacts matching `conditions` (SQL over `contacts c`, values bound through `sql`).
json::array contacts_page(pqxx::work& tx, SqlBuilder& sql, std::vector<std::string> conditions, const Page& page) {
  conditions.push_back("c.id > " + sql.param(std::to_string(page.after_id)) + "::bigint");
  std::string where;
  for (const auto& c : conditions) where += (where.empty() ? "" : " AND ") + ("(" + c + ")");
  const std::string limit = sql.param(std::to_string(page.limit + 1));
  const std::string q = sql.with() + "SELECT " + kContactColumns + " FROM contacts c WHERE " + where + " ORDER BY c.id LIMIT " + limit + "::bigint";
  json::array a;
  for (const auto& row : sql_exec(tx, q, sql)) a.emplace_back(contact_json(row));
  return a;
}

// --- groups --------------------------------------------------------------------------------

const std::string kGroupColumns = std::string(
    "g.id, g.name, g.description, g.kind, g.visible_on_portal, g.changeable_on_portal, g.filter::text, g.operation, "
    "coalesce((SELECT json_agg(m.member_group_id ORDER BY m.member_group_id) FROM group_composite_members m "
    "          WHERE m.group_id = g.id), '[]')::text, "
    "(SELECT count(*) FROM group_contacts WHERE group_id = g.id), "
    "to_char(g.created_at AT TIME ZONE 'UTC', ") + kTimestamp + "), to_char(g.updated_at AT TIME ZONE 'UTC', " + kTimestamp + ")";

json::object group_json(const pqxx::row& row) {
  const std::string kind = row[3].as<std::string>();
  json::object o{{"id", row[0].as<std::int64_t>()},
                 {"name", row[1].c_str()},
                 {"description", row[2].c_str()},
                 {"kind", kind},
                 {"visible_on_portal", row[4].as<bool>()},
                 {"changeable_on_portal", row[5].as<bool>()},
                 {"filter", row[6].is_null() ? json::value(nullptr) : json::parse(row[6].c_str())},
                 {"operation", row[7].is_null() ? json::value(nullptr) : json::value(row[7].c_str())},
                 {"member_groups", json::parse(row[8].c_str())},
                 {"created_at", row[10].c_str()},
                 {"updated_at", row[11].c_str()}};
  if (kind == "static") o["member_count"] = row[9].as<std::int64_t>();
  return o;
}

json::object load_group(pqxx::work& tx, std::int64_t id) {
  auto r = tx.exec_params("SELECT " + kGroupColumns + " FROM contact_groups g WHERE g.id = $1", id);
  if (r.empty()) throw ApiError(404, "not_found", "no group with id " + std::to_string(id));
  return group_json(r[0]);
}

struct GroupInput {
  std::optional<std::string> name, description, kind, operation;
  std::optional<bool> visible_on_portal, changeable_on_portal;
  std::optional<GroupFilter> filter;
  std::optional<std::vector<std::int64_t>> member_groups, members;
};

GroupFilter read_filter(const json::value& v) {
  if (!v.is_object()) invalid("filter", "filter must be an object {\"match\", \"conditions\"}");
  const auto& o = v.as_object();
  only_keys(o, "filter", {"match", "conditions"});
  GroupFilter f;
  if (const auto* m = o.if_contains("match"); m && !m->is_null()) f.match = nested_text(*m, "filter.match", 10);
  const auto* conditions = o.if_contains("conditions");
  if (!conditions || !conditions->is_array()) invalid("filter.conditions", "filter.conditions must be a list of conditions");
  if (conditions->as_array().size() > 50) invalid("filter.conditions", "a filter has at most 50 conditions");
  for (std::size_t i = 0; i < conditions->as_array().size(); ++i) {
    const auto& c = conditions->as_array()[i];
    const std::string at = "filter.conditions[" + std::to_string(i) + "]";
    if (!c.is_object()) invalid(at, at + " must be an object {\"field\", \"op\", \"values\"}");
    only_keys(c.as_object(), at, {"field", "op", "values"});
    FilterCondition fc;
    auto text = [&](const char* k) {
      const auto* x = c.as_object().if_contains(k);
      if (!x) invalid(at + "." + k, at + "." + k + " is required", "required");
      return nested_text(*x, at + "." + k, 40, true);
    };
    fc.field = text("field");
    fc.op = text("op");
    const auto* values = c.as_object().if_contains("values");
    if (!values || !values->is_array()) invalid(at + ".values", at + ".values must be a list");
    if (values->as_array().size() > 10) invalid(at + ".values", at + ".values has too many items");
    for (std::size_t j = 0; j < values->as_array().size(); ++j) {
      const auto& x = values->as_array()[j];
      const std::string vat = at + ".values[" + std::to_string(j) + "]";
      if (x.is_int64())
        fc.values.push_back(std::to_string(x.as_int64()));
      else if (x.is_uint64())
        fc.values.push_back(std::to_string(x.as_uint64()));
      else
        fc.values.push_back(nested_text(x, vat, 100));
    }
    f.conditions.push_back(std::move(fc));
  }
  if (auto e = validate_group_filter(f)) invalid(e->field_path, e->message);
  for (auto& c : f.conditions)
    if (c.field == "postcode")
      for (auto& v : c.values) v = normalize_postcode(v);
  return f;
}

json::object filter_json(const GroupFilter& f) {
  json::array conditions;
  for (const auto& c : f.conditions) {
    json::array values;
    for (const auto& v : c.values) values.emplace_back(json::string(v));
    conditions.emplace_back(json::object{{"field", c.field}, {"op", c.op}, {"values", values}});
  }
  return {{"match", f.match}, {"conditions", conditions}};
}

std::optional<std::vector<std::int64_t>> read_member_ids(const JsonInput& in, const std::string& key, bool required = false) {
  auto ids = in.id_list(key, required);
  if (!ids) return ids;
  if (ids->size() > kMaxGroupMembers) invalid(key, key + " has more than " + std::to_string(kMaxGroupMembers) + " items");
  return ids;
}

GroupInput read_group_input(const JsonInput& in, bool creating) {
  std::set<std::string> known = {"name", "description", "kind", "visible_on_portal", "changeable_on_portal", "filter", "operation",
                                 "member_groups"};
  if (creating) known.insert("members");
  if (!creating && in.has("members")) invalid("members", "members are replaced with PUT /api/v1/groups/{id}/members");
  in.only(known);
  GroupInput g;
  g.name = in.text("name", creating, 100);
  if (in.has("description")) {
    g.description = in.text("description", false, 2000, true);
    if (g.description) g.description = trim(*g.description);
  }
  g.kind = in.text("kind", creating, 20);
  if (g.kind && *g.kind != "static" && *g.kind != "dynamic" && *g.kind != "composite")
    invalid("kind", "kind is static, dynamic or composite");
  g.visible_on_portal = in.boolean("visible_on_portal");
  g.changeable_on_portal = in.boolean("changeable_on_portal");
  if (const auto* f = in.raw("filter"); f && !f->is_null()) g.filter = read_filter(*f);
  g.operation = in.text("operation", false, 20);
  if (g.operation && *g.operation != "union" && *g.operation != "intersection")
    invalid("operation", "operation is union or intersection");
  g.member_groups = read_member_ids(in, "member_groups");
  if (creating) g.members = read_member_ids(in, "members");
  return g;
}

// Checks what only fits one kind; `kind` is the group's (new or existing) kind.
void check_group_kind_fields(const GroupInput& g, const std::string& kind, bool creating) {
  if (g.filter && kind != "dynamic") invalid("filter", "only a dynamic group has a filter");
  if ((g.operation || g.member_groups) && kind != "composite")
    invalid(g.operation ? "operation" : "member_groups", "only a composite group has an operation and member groups");
  if (g.members && kind != "static")
    invalid("members", kind == "composite" ? "a composite group lists its groups in member_groups" : "a dynamic group's members follow from its filter");
  if (creating && kind == "dynamic" && !g.filter) invalid("filter", "a dynamic group needs a filter", "required");
  if (creating && kind == "composite" && !g.operation) invalid("operation", "a composite group needs an operation (union or intersection)", "required");
}

// The first id in `ids` that has no row in `table`, as its index, or -1.
long first_unknown(pqxx::work& tx, const char* table, const std::vector<std::int64_t>& ids) {
  if (ids.empty()) return -1;
  auto r = tx.exec_params(std::string("SELECT x.i FROM unnest($1::bigint[]) WITH ORDINALITY AS x(id, i) "
                                      "WHERE NOT EXISTS (SELECT 1 FROM ") + table + " t WHERE t.id = x.id) ORDER BY x.i LIMIT 1",
                          sql_id_array(ids));
  return r.empty() ? -1 : r[0][0].as<long>() - 1;
}

void check_member_groups(pqxx::work& tx, const std::vector<std::int64_t>& ids, const std::string& key) {
  if (auto i = first_unknown(tx, "contact_groups", ids); i >= 0)
    invalid(key + "[" + std::to_string(i) + "]", "no group with id " + std::to_string(ids[i]));
}

void check_filter_references(pqxx::work& tx, const GroupFilter& f) {
  for (std::size_t i = 0; i < f.conditions.size(); ++i) {
    const auto& c = f.conditions[i];
    const std::string at = "filter.conditions[" + std::to_string(i) + "].values";
    if (c.field == "group" && tx.exec_params("SELECT 1 FROM contact_groups WHERE id = $1::bigint", c.values.at(0)).empty())
      invalid(at, "no group with id " + c.values.at(0));
    if (c.field == "product" && tx.exec_params("SELECT 1 FROM products WHERE id = $1::bigint", c.values.at(0)).empty())
      invalid(at, "no product with id " + c.values.at(0));
  }
}

// Refuses giving `group` these member groups when that closes a cycle; names the path.
void check_no_cycle(pqxx::work& tx, std::int64_t group, const std::vector<std::int64_t>& members, const std::string& field) {
  // A dynamic group's member_of edges and a composite group's members are both "contains" edges;
  // composite_cycle() replaces the group's own edges by `members`.
  auto cycle = composite_cycle(group_edges(tx), group, members);
  if (!cycle) return;
  std::map<std::int64_t, std::string> names;
  for (const auto& r : tx.exec_params("SELECT id, name FROM contact_groups WHERE id = ANY($1::bigint[])", sql_id_array(*cycle)))
    names[r[0].as<std::int64_t>()] = r[1].as<std::string>();
  std::string path;
  for (auto id : *cycle) path += (path.empty() ? "" : " -> ") + ("'" + names[id] + "' (#" + std::to_string(id) + ")");
  throw ApiError(422, "group_cycle", "a group cannot contain itself: " + path, field);
}

void check_group_name_free(pqxx::work& tx, const std::string& name, std::int64_t id) {
  if (!tx.exec_params("SELECT 1 FROM contact_groups WHERE lower(name) = lower($1) AND id <> $2", name, id).empty())
    throw ApiError(409, "name_taken", "a group with this name exists already", "name");
}

void check_portal_flags(bool visible, bool changeable, const std::string& kind) {
  if (changeable && kind != "static")
    invalid("changeable_on_portal", "only a static group's membership can be changed on the portal");
  if (changeable && !visible) invalid("changeable_on_portal", "a group changeable on the portal must be visible on the portal");
}

void composite_members_replace(pqxx::work& tx, std::int64_t id, const std::vector<std::int64_t>& members) {
  tx.exec_params("DELETE FROM group_composite_members WHERE group_id = $1", id);
  tx.exec_params("INSERT INTO group_composite_members (group_id, member_group_id) SELECT $1, x FROM unnest($2::bigint[]) x ON CONFLICT DO NOTHING",
                 id, sql_id_array(members));
}

json::array static_member_ids(pqxx::work& tx, std::int64_t id) {
  json::array a;
  for (const auto& r : tx.exec_params("SELECT contact_id FROM group_contacts WHERE group_id = $1 ORDER BY contact_id", id))
    a.emplace_back(r[0].as<std::int64_t>());
  return a;
}

void static_members_replace(pqxx::work& tx, std::int64_t id, const std::vector<std::int64_t>& members) {
  if (auto i = first_unknown(tx, "contacts", members); i >= 0)
    invalid("members[" + std::to_string(i) + "]", "no contact with id " + std::to_string(members[i]));
  tx.exec_params("DELETE FROM group_contacts WHERE group_id = $1 AND NOT contact_id = ANY($2::bigint[])", id, sql_id_array(members));
  tx.exec_params("INSERT INTO group_contacts (group_id, contact_id) SELECT $1, x FROM unnest($2::bigint[]) x ON CONFLICT DO NOTHING", id,
                 sql_id_array(members));
}

// A group that cannot be resolved (only possible when the graph was changed outside the API).
template <class F>
auto resolving(F f) {
  try {
    return f();
  } catch (const GroupResolveError& e) {
    throw ApiError(409, "group_unresolvable", e.what());
  }
}

}  // namespace

void register_contact_routes(Api& api) {
  Services& s = api.services();

  // --- contacts ----------------------------------------------------------------------------
  api.add("GET", "/api/v1/contacts", kRead, [&s](HttpRequest& req, const Principal&) -> awaitable<HttpResponse> {
    const Page page = page_of(req);
    const std::string q = query_param(req, "q");
    const std::string type = query_param(req, "type");
    if (!type.empty() && type != "person" && type != "organisation") invalid("type", "type is person or organisation");
    const std::string archived = query_param(req, "archived");
    if (!archived.empty() && archived != "true" && archived != "false") invalid("archived", "archived must be true or false");
    std::string email_key;
    if (const std::string email = query_param(req, "email", 254); !email.empty()) {
      auto n = normalize_email(email);
      if (auto* e = std::get_if<AddressError>(&n)) invalid("email", "email: " + e->reason, "invalid_address");
      email_key = email_match_key(std::get<std::string>(n));
    }
    const std::int64_t group = query_id(req, "group");
    auto op = store_transact(s.store, [=](pqxx::work& tx) {
      SqlBuilder sql;
      std::vector<std::string> where;
      where.push_back(archived == "true" ? "c.archived" : "NOT c.archived");
      if (!type.empty()) where.push_back("c.type = " + sql.param(type));
      if (!q.empty()) {
        const std::string pattern = sql.param("%" + escape_like(q) + "%");
        where.push_back(
            "concat_ws(' ', nullif(c.first_name, ''), nullif(c.infix, ''), nullif(c.last_name, ''), nullif(c.organisation_name, '')) ILIKE " +
            pattern + " OR EXISTS (SELECT 1 FROM contact_emails e WHERE e.contact_id = c.id AND e.email_match_key ILIKE " + pattern + ")");
      }
      if (!email_key.empty())
        where.push_back("EXISTS (SELECT 1 FROM contact_emails e WHERE e.contact_id = c.id AND e.email_match_key = " + sql.param(email_key) + ")");
      if (group) {
        if (tx.exec_params("SELECT 1 FROM contact_groups WHERE id = $1", group).empty()) invalid("group", "no group with id " + std::to_string(group));
        where.push_back("c.id IN (" + resolving([&] { return group_members_sql(tx, group, sql); }) + ")");
      }
      return contacts_page(tx, sql, where, page);
    });
    auto items = co_await std::move(op);
    co_return page_response(std::move(items), page, [](const json::value& v) { return v.at("id").as_int64(); });
  });

  api.add("GET", "/api/v1/contacts/{id}", kRead, [&s](HttpRequest& req, const Principal&) -> awaitable<HttpResponse> {
    const auto id = path_id(req);
    auto op = store_transact(s.store, [id](pqxx::work& tx) { return load_contact(tx, id); });
    co_return json_response(200, co_await std::move(op));
  });

  api.add("POST", "/api/v1/contacts", kCrmWrite, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    const ContactInput f = read_contact_input(JsonInput(req.body), true);
    const Contact c = apply_contact_input(Contact{}, f, true);
    const Actor actor = p.actor();
    auto op = store_transact(s.store, [f, c, actor](pqxx::work& tx) {
      const auto id = contact_write(tx, c, 0);
      contact_emails_replace(tx, id, f.emails.value_or(std::vector<EmailInput>{}));
      auto after = load_contact(tx, id);
      audit_write(tx, actor, "contact", std::to_string(id), "create", diff_objects({}, after));
      return after;
    });
    auto contact = co_await std::move(op);
    co_return json_response(201, contact);
  });

  api.add("PATCH", "/api/v1/contacts/{id}", kCrmWrite, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    const auto id = path_id(req);
    const ContactInput f = read_contact_input(JsonInput(req.body), false);
    const Actor actor = p.actor();
    auto op = store_transact(s.store, [id, f, actor](pqxx::work& tx) {
      tx.exec_params("SELECT 1 FROM contacts WHERE id = $1 FOR UPDATE", id);
      auto before = load_contact(tx, id);
      const Contact c = apply_contact_input(contact_from_json(before), f, false);
      contact_write(tx, c, id);
      auto after = load_contact(tx, id);
      auto changes = changes_without_timestamps(before, after);
      if (!changes.empty()) {
        const bool archiving = before.at("archived") != after.at("archived");
        audit_write(tx, actor, "contact", std::to_string(id),
                    archiving ? (c.archived ? "archive" : "unarchive") : "update", changes);
      }
      return after;
    });
    auto contact = co_await std::move(op);
    co_return json_response(200, contact);
  });

  api.add("PUT", "/api/v1/contacts/{id}/emails", kCrmWrite, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    const auto id = path_id(req);
    JsonInput in(req.body);
    in.only({"emails"});
    if (!in.raw("emails") || in.raw("emails")->is_null()) invalid("emails", "emails is required (an empty list removes every address)", "required");
    const auto emails = read_emails(in, "emails");
    const Actor actor = p.actor();
    auto op = store_transact(s.store, [id, emails, actor](pqxx::work& tx) {
      tx.exec_params("SELECT 1 FROM contacts WHERE id = $1 FOR UPDATE", id);
      auto before = load_contact(tx, id);
      contact_emails_replace(tx, id, emails);
      tx.exec_params("UPDATE contacts SET updated_at = now() WHERE id = $1", id);
      auto after = load_contact(tx, id);
      auto changes = changes_without_timestamps(before, after);
      if (!changes.empty()) audit_write(tx, actor, "contact", std::to_string(id), "emails_replace", changes);
      return after;
    });
    auto contact = co_await std::move(op);
    co_return json_response(200, contact);
  });

  // --- groups ------------------------------------------------------------------------------
  api.add("GET", "/api/v1/groups", kRead, [&s](HttpRequest& req, const Principal&) -> awaitable<HttpResponse> {
    const Page page = page_of(req);
    const std::string q = query_param(req, "q");
    const std::string kind = query_param(req, "kind");
    if (!kind.empty() && kind != "static" && kind != "dynamic" && kind != "composite") invalid("kind", "kind is static, dynamic or composite");
    const std::string visible = query_param(req, "visible_on_portal");
    if (!visible.empty() && visible != "true" && visible != "false") invalid("visible_on_portal", "visible_on_portal must be true or false");
    auto op = store_transact(s.store, [=](pqxx::work& tx) {
      json::array a;
      for (const auto& r : tx.exec_params(
               "SELECT " + kGroupColumns + " FROM contact_groups g WHERE g.id > $1 AND ($2 = '' OR g.name ILIKE '%' || $2 || '%') "
               "AND ($3 = '' OR g.kind = $3) AND ($4 = '' OR g.visible_on_portal = ($4 = 'true')) ORDER BY g.id LIMIT $5",
               page.after_id, escape_like(q), kind, visible, page.limit + 1))
        a.emplace_back(group_json(r));
      return a;
    });
    auto items = co_await std::move(op);
    co_return page_response(std::move(items), page, [](const json::value& v) { return v.at("id").as_int64(); });
  });

  api.add("GET", "/api/v1/groups/{id}", kRead, [&s](HttpRequest& req, const Principal&) -> awaitable<HttpResponse> {
    const auto id = path_id(req);
    auto op = store_transact(s.store, [id](pqxx::work& tx) { return load_group(tx, id); });
    co_return json_response(200, co_await std::move(op));
  });

  api.add("POST", "/api/v1/groups", kCrmWrite, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    const GroupInput g = read_group_input(JsonInput(req.body), true);
    if (g.name->empty()) invalid("name", "name must not be empty", "required");
    check_group_kind_fields(g, *g.kind, true);
    const bool visible = g.visible_on_portal.value_or(false), changeable = g.changeable_on_portal.value_or(false);
    check_portal_flags(visible, changeable, *g.kind);
    const Actor actor = p.actor();
    auto op = store_transact(s.store, [g, visible, changeable, actor](pqxx::work& tx) {
      // A new group cannot close a cycle (nothing refers to it yet); the lock orders it against
      // changes of the groups it refers to.
      group_graph_lock(tx);
      check_group_name_free(tx, *g.name, 0);
      if (g.filter) check_filter_references(tx, *g.filter);
      if (g.member_groups) check_member_groups(tx, *g.member_groups, "member_groups");
      const std::optional<std::string> filter = g.filter ? std::optional(json::serialize(filter_json(*g.filter))) : std::nullopt;
      const auto id = tx.exec_params1(
          "INSERT INTO contact_groups (name, description, kind, visible_on_portal, changeable_on_portal, filter, operation) "
          "VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7) RETURNING id",
          *g.name, g.description.value_or(""), *g.kind, visible, changeable, filter, g.operation)[0].as<std::int64_t>();
      if (g.member_groups) composite_members_replace(tx, id, *g.member_groups);
      if (g.members) static_members_replace(tx, id, *g.members);
      auto after = load_group(tx, id);
      if (g.members) after["members"] = static_member_ids(tx, id);
      audit_write(tx, actor, "group", std::to_string(id), "create", diff_objects({}, after));
      after.erase("members");
      return after;
    });
    auto group = co_await std::move(op);
    co_return json_response(201, group);
  });

  api.add("PATCH", "/api/v1/groups/{id}", kCrmWrite, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    const auto id = path_id(req);
    const GroupInput g = read_group_input(JsonInput(req.body), false);
    if (g.name && g.name->empty()) invalid("name", "name must not be empty", "required");
    const Actor actor = p.actor();
    auto op = store_transact(s.store, [id, g, actor](pqxx::work& tx) {
      group_graph_lock(tx);
      auto before = load_group(tx, id);
      const std::string kind(before.at("kind").as_string());
      if (g.kind && *g.kind != kind) invalid("kind", "a group's kind cannot change after creation (it is " + kind + ")", "immutable");
      check_group_kind_fields(g, kind, false);
      check_portal_flags(g.visible_on_portal.value_or(before.at("visible_on_portal").as_bool()),
                         g.changeable_on_portal.value_or(before.at("changeable_on_portal").as_bool()), kind);
      if (g.name) check_group_name_free(tx, *g.name, id);
      if (g.filter) {
        check_filter_references(tx, *g.filter);
        check_no_cycle(tx, id, filter_referenced_groups(*g.filter), "filter");
      }
      if (g.member_groups) {
        check_member_groups(tx, *g.member_groups, "member_groups");
        check_no_cycle(tx, id, *g.member_groups, "member_groups");
      }
      const std::optional<std::string> filter = g.filter ? std::optional(json::serialize(filter_json(*g.filter))) : std::nullopt;
      tx.exec_params(
          "UPDATE contact_groups SET name = coalesce($2, name), description = coalesce($3, description), "
          "visible_on_portal = coalesce($4, visible_on_portal), changeable_on_portal = coalesce($5, changeable_on_portal), "
          "filter = coalesce($6::jsonb, filter), operation = coalesce($7, operation), updated_at = now() WHERE id = $1",
          id, g.name, g.description, g.visible_on_portal, g.changeable_on_portal, filter, g.operation);
      if (g.member_groups) composite_members_replace(tx, id, *g.member_groups);
      auto after = load_group(tx, id);
      auto changes = changes_without_timestamps(before, after);
      if (!changes.empty()) audit_write(tx, actor, "group", std::to_string(id), "update", changes);
      return after;
    });
    auto group = co_await std::move(op);
    co_return json_response(200, group);
  });

  api.add("PUT", "/api/v1/groups/{id}/members", kCrmWrite, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    const auto id = path_id(req);
    JsonInput in(req.body);
    in.only({"members"});
    const auto members = read_member_ids(in, "members", true).value();
    const Actor actor = p.actor();
    auto op = store_transact(s.store, [id, members, actor](pqxx::work& tx) {
      group_graph_lock(tx);
      auto group = load_group(tx, id);
      const std::string kind(group.at("kind").as_string());
      json::object before, after;
      if (kind == "dynamic") invalid("members", "a dynamic group's members follow from its filter");
      if (kind == "composite") {
        check_member_groups(tx, members, "members");
        check_no_cycle(tx, id, members, "members");
        before["member_groups"] = group.at("member_groups");
        composite_members_replace(tx, id, members);
        group = load_group(tx, id);
        after["member_groups"] = group.at("member_groups");
      } else {
        before["members"] = static_member_ids(tx, id);
        static_members_replace(tx, id, members);
        after["members"] = static_member_ids(tx, id);
      }
      auto changes = diff_objects(before, after);
      if (!changes.empty()) {
        tx.exec_params("UPDATE contact_groups SET updated_at = now() WHERE id = $1", id);
        audit_write(tx, actor, "group", std::to_string(id), "members_replace", changes);
      }
      return load_group(tx, id);
    });
    auto group = co_await std::move(op);
    co_return json_response(200, group);
  });

  api.add("GET", "/api/v1/groups/{id}/contacts", kRead, [&s](HttpRequest& req, const Principal&) -> awaitable<HttpResponse> {
    const auto id = path_id(req);
    const Page page = page_of(req);
    auto op = store_transact(s.store, [id, page](pqxx::work& tx) {
      load_group(tx, id);
      SqlBuilder sql;
      const std::string members = resolving([&] { return group_members_sql(tx, id, sql); });
      return contacts_page(tx, sql, {"NOT c.archived", "c.id IN (" + members + ")"}, page);
    });
    auto items = co_await std::move(op);
    co_return page_response(std::move(items), page, [](const json::value& v) { return v.at("id").as_int64(); });
  });
}

}  // namespace mailgate
