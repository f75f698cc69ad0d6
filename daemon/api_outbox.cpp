// /api/v1: sending mail. Everything goes into the outbox (store/outbox.hpp) in the transaction of
// the request, is audited there, and is sent by daemon/outbox.cpp; the answer is 202 with the row.
//
// - POST /mail: a message (to/cc/bcc, subject, text and/or HTML, attachments as base64).
// - POST /mail/template: a template for one contact, merge fields filled from the contact and the
//   administration (values HTML-escaped in HTML, control characters removed in the subject).
// - POST /mail/invoice: the administration's template for the kind (first invoice by transfer or
//   direct debit, reminder, dunning) with the nota_* fields, and the invoice PDF attached.
// - POST /groups/{id}/mailing: a template to every contact of a group (any kind), one
//   personalised row per contact with an address, each contact once; the answer counts the
//   queued rows and lists the contacts skipped and why.
// - The sender (the mailbox): the one named; else the administration's sender for reports and
//   invoices; else the user's default sender; else the primary mailbox. A user may send only from
//   mailboxes linked to them (admins and API keys from any). BCC to the sender when the mailbox or
//   the administration says so.
// - Addresses are checked and normalised; a CR or LF in any header value (subject, names,
//   file names) is refused with 422 naming the field.
// - GET /outbox, /outbox/{id}: the rows and their state (queued, sending, sent, retrying with the
//   next attempt, failed with the reason, cancelled); retry (failed or cancelled -> queued) and
//   cancel (queued, retrying or failed -> cancelled).
// - POST /mailboxes/{id}/test: the connection test of the mailbox's outgoing settings.
#include <algorithm>
#include <cctype>
#include <limits>
#include <map>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <pqxx/pqxx>

#include "daemon/api.hpp"
#include "daemon/outbox.hpp"
#include "rules/address.hpp"
#include "rules/templates.hpp"
#include "store/groups.hpp"
#include "store/outbox.hpp"
#include "store/run.hpp"
#include "util/crypto.hpp"

namespace mailgate {

namespace json = boost::json;
using boost::asio::awaitable;

namespace {

constexpr std::size_t kMaxRecipients = 100;
constexpr std::size_t kMaxAttachmentBytes = 25 << 20;

const std::string kOutboxColumns =
    "o.id, o.kind, o.state, o.mailbox_id, coalesce(o.from_address, ''), o.to_addresses, o.cc_addresses, o.bcc_addresses, o.subject, "
    "o.message_id, o.attempts, " + sql_iso_time("o.next_attempt_at") + ", o.last_error, o.failed_step, o.refused::text, " + sql_iso_time("o.created_at") +
    ", " + sql_iso_time("o.sent_at") + ", o.contact_id, o.administration_id, o.template_id, o.created_by, o.sent_message_id, o.cause_entity, o.cause_id";

json::object outbox_json(const pqxx::row& r) {
  const std::string state = r[2].c_str();
  return json::object{{"id", r[0].as<std::int64_t>()},
                      {"kind", r[1].c_str()},
                      {"state", state},
                      {"mailbox_id", json_nullable_id(r[3])},
                      {"from", r[4].c_str()},
                      {"to", json_text_array(r[5])},
                      {"cc", json_text_array(r[6])},
                      {"bcc", json_text_array(r[7])},
                      {"subject", r[8].c_str()},
                      {"message_id", r[9].c_str()},
                      {"attempts", r[10].as<std::int64_t>()},
                      {"next_attempt_at", state == "queued" || state == "retrying" ? json::value(r[11].c_str()) : json::value(nullptr)},
                      {"last_error", json_nullable_text(r[12])},
                      {"failed_step", json_nullable_text(r[13])},
                      {"refused", json::parse(r[14].c_str())},
                      {"created_at", r[15].c_str()},
                      {"sent_at", json_nullable_text(r[16])},
                      {"contact_id", json_nullable_id(r[17])},
                      {"administration_id", json_nullable_id(r[18])},
                      {"template_id", json_nullable_id(r[19])},
                      {"created_by", json_nullable_id(r[20])},
                      {"sent_message_id", json_nullable_id(r[21])},
                      {"cause", r[22].is_null() ? json::value(nullptr) : json::value(json::object{{"entity", r[22].c_str()}, {"id", r[23].c_str()}})}};
}

// Users other than admins see the rows of their mailboxes and the rows they queued.
std::string visible_sql(const Principal& p, SqlBuilder& sql) {
  if (p.is_admin() || p.kind == "api_key") return "true";
  const std::string me = sql.param(std::to_string(p.id)) + "::bigint";
  return "(o.created_by = " + me + " OR EXISTS (SELECT 1 FROM mailbox_users mu WHERE mu.mailbox_id = o.mailbox_id AND mu.user_id = " + me + "))";
}

json::object load_row(pqxx::work& tx, std::int64_t id, const Principal& p) {
  SqlBuilder sql;
  const std::string visible = visible_sql(p, sql);
  const std::string query = "SELECT " + kOutboxColumns + " FROM outbox o WHERE o.id = " + sql.param(std::to_string(id)) + "::bigint AND " + visible;
  auto r = sql_exec(tx, query, sql);
  if (r.empty()) throw ApiError(404, "not_found", "no outbox row with id " + std::to_string(id));
  return outbox_json(r[0]);
}

// --- input ---------------------------------------------------------------------------------

std::vector<std::string> read_addresses(const JsonInput& in, const std::string& key) {
  std::vector<std::string> out;
  const auto* v = in.raw(key);
  if (!v || v->is_null()) return out;
  if (!v->is_array()) invalid(key, key + " must be a list of e-mail addresses");
  const auto& a = v->as_array();
  if (a.size() > kMaxRecipients) invalid(key, key + " has more than " + std::to_string(kMaxRecipients) + " addresses");
  for (std::size_t i = 0; i < a.size(); ++i) {
    const std::string field = key + "[" + std::to_string(i) + "]";
    if (!a[i].is_string()) invalid(field, field + " must be an e-mail address");
    const std::string s = trim(a[i].as_string());
    if (has_line_break(s)) invalid(field, field + " must not contain a line break");
    auto n = normalize_email(s);
    if (auto* e = std::get_if<AddressError>(&n)) invalid(field, field + ": " + e->reason, "invalid_address");
    out.push_back(std::get<std::string>(n));
  }
  return out;
}

std::vector<OutgoingAttachment> read_attachments(const JsonInput& in) {
  std::vector<OutgoingAttachment> out;
  const auto* v = in.raw("attachments");
  if (!v || v->is_null()) return out;
  if (!v->is_array()) invalid("attachments", "attachments must be a list");
  std::size_t total = 0;
  const auto& a = v->as_array();
  for (std::size_t i = 0; i < a.size(); ++i) {
    const std::string at = "attachments[" + std::to_string(i) + "]";
    if (!a[i].is_object()) invalid(at, at + " must be an object with filename, content_type and content_base64");
    const auto& o = a[i].as_object();
    for (const auto& [k, _] : o)
      if (k != "filename" && k != "content_type" && k != "content_base64") invalid(at + "." + std::string(k), "unknown field", "unknown_field");
    auto text = [&](const char* k, std::size_t max) {
      const auto* f = o.if_contains(k);
      if (!f || !f->is_string()) invalid(at + "." + k, at + "." + k + " is required", "required");
      std::string s = trim(f->as_string());
      if (s.empty() || s.size() > max) invalid(at + "." + k, at + "." + k + " must be 1 to " + std::to_string(max) + " characters");
      if (has_line_break(s)) invalid(at + "." + k, at + "." + k + " must not contain a line break");
      return s;
    };
    OutgoingAttachment att;
    att.filename = text("filename", 200);
    att.content_type = text("content_type", 100);
    for (auto& c : att.content_type) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (att.content_type.find('/') == std::string::npos || att.content_type.find_first_of(" ;\"") != std::string::npos)
      invalid(at + ".content_type", at + ".content_type must be a type/subtype such as application/pdf");
    const auto* data = o.if_contains("content_base64");
    if (!data || !data->is_string()) invalid(at + ".content_base64", at + ".content_base64 is required", "required");
    try {
      att.data = base64_decode(data->as_string());
    } catch (const std::invalid_argument&) {
      invalid(at + ".content_base64", at + ".content_base64 is not base64");
    }
    total += att.data.size();
    if (total > kMaxAttachmentBytes) invalid(at, "the attachments are larger than 25 MB together");
    out.push_back(std::move(att));
  }
  return out;
}

// --- sender choice -------------------------------------------------------------------------

struct Sender {
  std::int64_t mailbox_id = 0;
  std::string address, display_name;
  bool bcc_self = false;
};

Sender choose_sender(pqxx::work& tx, const Principal& p, std::optional<std::int64_t> mailbox_id, std::optional<std::int64_t> administration_id) {
  std::optional<std::int64_t> chosen = mailbox_id;
  bool administration_bcc = false;
  if (administration_id) {
    auto a = tx.exec_params("SELECT sender_mailbox_id, bcc_self FROM administrations WHERE id = $1", *administration_id);
    if (a.empty()) invalid("administration_id", "no administration with id " + std::to_string(*administration_id));
    administration_bcc = a[0][1].as<bool>();
    if (!chosen && !a[0][0].is_null()) chosen = a[0][0].as<std::int64_t>();
  }
  if (!chosen && p.kind == "user") {
    auto u = tx.exec_params("SELECT default_mailbox_id FROM users WHERE id = $1", p.id);
    if (!u.empty() && !u[0][0].is_null()) chosen = u[0][0].as<std::int64_t>();
  }
  if (!chosen) {
    auto primary = tx.exec("SELECT id FROM mailboxes WHERE is_primary");
    if (primary.empty()) throw ApiError(409, "no_mailbox", "there is no mailbox to send from: add one first", "mailbox_id");
    chosen = primary[0][0].as<std::int64_t>();
  }
  auto m = tx.exec_params("SELECT id, address, display_name, bcc_self, active FROM mailboxes WHERE id = $1", *chosen);
  if (m.empty()) invalid("mailbox_id", "no mailbox with id " + std::to_string(*chosen));
  if (!m[0][4].as<bool>()) invalid("mailbox_id", "mailbox " + std::to_string(*chosen) + " is inactive");
  if (!p.is_admin() && p.kind == "user" &&
      tx.exec_params("SELECT 1 FROM mailbox_users WHERE mailbox_id = $1 AND user_id = $2", *chosen, p.id).empty())
    throw ApiError(403, "forbidden", "you may send only from mailboxes linked to you; mailbox " + std::to_string(*chosen) + " is not", "mailbox_id");
  return {*chosen, m[0][1].as<std::string>(), m[0][2].as<std::string>(), m[0][3].as<bool>() || administration_bcc};
}

std::string domain_of(const std::string& address) { return address.substr(address.find('@') + 1); }

// Queues and audits one row; returns its id.
std::int64_t queue(pqxx::work& tx, OutboxRequest r, const Sender& sender, const Principal& p) {
  r.mailbox_id = sender.mailbox_id;
  if (sender.bcc_self && std::find(r.bcc.begin(), r.bcc.end(), sender.address) == r.bcc.end()) r.bcc.push_back(sender.address);
  if (p.kind == "user") r.created_by = p.id;
  const auto id = outbox_queue(tx, r, domain_of(sender.address));
  std::string to;
  for (const auto& a : r.to) to += (to.empty() ? "" : ", ") + a;
  audit_write(tx, p.actor(), "outbox", std::to_string(id), "queue",
              {{"kind", std::nullopt, r.kind}, {"mailbox_id", std::nullopt, std::to_string(sender.mailbox_id)}, {"to", std::nullopt, to},
               {"subject", std::nullopt, r.subject}});
  return id;
}

// --- templates -----------------------------------------------------------------------------

struct Template {
  std::string subject, text, html;
};

Template load_template(pqxx::work& tx, std::int64_t id) {
  auto r = tx.exec_params("SELECT subject, text_body, html_body, active FROM templates WHERE id = $1", id);
  if (r.empty()) invalid("template_id", "no template with id " + std::to_string(id));
  if (!r[0][3].as<bool>()) invalid("template_id", "template " + std::to_string(id) + " is inactive");
  return {r[0][0].as<std::string>(), r[0][1].as<std::string>(), r[0][2].as<std::string>()};
}

void add_administration_values(pqxx::work& tx, std::optional<std::int64_t> administration_id, MergeValues& v) {
  if (!administration_id) return;
  auto r = tx.exec_params("SELECT name, address, postal_code, city, country, kvk_number, vat_number, iban, email, website "
                          "FROM administrations WHERE id = $1",
                          *administration_id);
  if (r.empty()) return;
  const char* keys[] = {"administratie_naam", "administratie_adres", "administratie_postcode", "administratie_woonplaats",
                        "administratie_land", "administratie_kvk", "administratie_btw_nummer", "administratie_iban",
                        "administratie_email", "administratie_website"};
  for (pqxx::row::size_type i = 0; i < 10; ++i) v[keys[i]] = r[0][i].is_null() ? "" : r[0][i].c_str();
}

struct ContactValues {
  std::string email;  // primary address, "" when none
  MergeValues values;
};

ContactValues contact_values(pqxx::work& tx, std::int64_t contact_id) {
  auto r = tx.exec_params(
      "SELECT c.id, c.type, c.title, c.first_name, c.infix, c.last_name, c.organisation_name, "
      "coalesce(c.phones->0->>'number', c.phones->>0, ''), concat_ws(' ', nullif(c.street, ''), nullif(concat(c.house_number, "
      "c.house_number_addition), '')), c.postcode, c.city, c.country, c.free_fields::text, "
      "coalesce((SELECT address FROM contact_emails e WHERE e.contact_id = c.id ORDER BY e.is_primary DESC, e.position LIMIT 1), '') "
      "FROM contacts c WHERE c.id = $1",
      contact_id);
  if (r.empty()) invalid("contact_id", "no contact with id " + std::to_string(contact_id));
  const auto& row = r[0];
  ContactValues c;
  auto& v = c.values;
  v["contact_nummer"] = row[0].c_str();
  v["contact_aanspreektitel"] = row[2].c_str();
  v["contact_voornaam"] = row[3].c_str();
  v["contact_tussenvoegsel"] = row[4].c_str();
  v["contact_achternaam"] = row[5].c_str();
  std::string name;
  for (const std::string& part : {std::string(row[3].c_str()), std::string(row[4].c_str()), std::string(row[5].c_str())})
    if (!part.empty()) name += (name.empty() ? "" : " ") + part;
  v["contact_naam"] = std::string(row[1].c_str()) == "organisation" ? row[6].c_str() : name;
  v["contact_telefoonnummer"] = row[7].c_str();
  v["contact_adres"] = row[8].c_str();
  v["contact_postcode"] = row[9].c_str();
  v["contact_woonplaats"] = row[10].c_str();
  v["contact_land"] = row[11].c_str();
  // Dongle data (Econobis) lives in the contact's free fields under the same names.
  const auto free = json::parse(row[12].c_str()).as_object();
  for (const auto& [k, value] : free)
    if (std::string(k).rfind("dongel_", 0) == 0 && value.is_string()) v["contact_" + std::string(k)] = value.as_string().c_str();
  c.email = row[13].c_str();
  v["contact_email"] = c.email;
  return c;
}

std::optional<std::string> render_checked(const std::string& body, const MergeValues& values, TemplateFormat format) {
  if (body.empty()) return std::string();
  auto parsed = template_parse(body);
  if (auto* e = std::get_if<TemplateError>(&parsed)) throw ApiError(409, "template_invalid", "the template cannot be used: " + e->message, "template_id");
  return template_render(std::get<ParsedTemplate>(parsed), values, format);
}

OutboxRequest from_template(const Template& t, const MergeValues& values) {
  OutboxRequest r;
  r.kind = "template";
  r.subject = render_checked(t.subject, values, TemplateFormat::header).value();
  r.text_body = render_checked(t.text, values, TemplateFormat::text).value();
  r.html_body = render_checked(t.html, values, TemplateFormat::html).value();
  return r;
}

// One template mail for one contact: to the given address or the contact's primary one.
struct TemplateMail {
  std::string kind = "template";
  std::int64_t template_id = 0, contact_id = 0;
  std::optional<std::string> to;
  std::optional<std::int64_t> mailbox, administration;
  MergeValues values;  // extra values (nota_*)
  std::vector<OutgoingAttachment> attachments;
};

std::int64_t queue_template_mail(pqxx::work& tx, const TemplateMail& m, const Principal& p) {
  const Template t = load_template(tx, m.template_id);
  ContactValues c = contact_values(tx, m.contact_id);
  add_administration_values(tx, m.administration, c.values);
  for (const auto& [k, v] : m.values) c.values[k] = v;
  const std::string address = m.to.value_or(c.email);
  if (address.empty()) invalid("contact_id", "contact " + std::to_string(m.contact_id) + " has no e-mail address; give \"to\"");
  OutboxRequest r = from_template(t, c.values);
  r.kind = m.kind;
  r.to = {address};
  r.contact_id = m.contact_id;
  r.template_id = m.template_id;
  r.administration_id = m.administration;
  r.attachments = m.attachments;
  const Sender sender = choose_sender(tx, p, m.mailbox, m.administration);
  return queue(tx, r, sender, p);
}

std::optional<std::int64_t> optional_id(const JsonInput& in, const std::string& key) {
  return in.integer(key, 1, std::numeric_limits<std::int64_t>::max());
}

}  // namespace

void register_outbox_routes(Api& api) {
  Services& s = api.services();

  api.add("POST", "/api/v1/mail", kMailSend, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    JsonInput in(req.body);
    in.only({"mailbox_id", "administration_id", "contact_id", "to", "cc", "bcc", "reply_to", "subject", "text", "html", "attachments"});
    OutboxRequest r;
    r.to = read_addresses(in, "to");
    r.cc = read_addresses(in, "cc");
    r.bcc = read_addresses(in, "bcc");
    if (r.to.empty() && r.cc.empty() && r.bcc.empty()) invalid("to", "at least one recipient is required", "required");
    if (r.to.size() + r.cc.size() + r.bcc.size() > kMaxRecipients) invalid("to", "at most " + std::to_string(kMaxRecipients) + " recipients");
    if (auto reply_to = in.email("reply_to")) r.reply_to = MailAddress{"", *reply_to};
    r.subject = in.text("subject", true, 998).value();
    if (r.subject.empty()) invalid("subject", "subject is required", "required");
    r.text_body = in.text("text", false, 1 << 20, true).value_or("");
    r.html_body = in.text("html", false, 4 << 20, true).value_or("");
    if (r.text_body.empty() && r.html_body.empty()) invalid("text", "text or html is required", "required");
    r.attachments = read_attachments(in);
    const auto mailbox = optional_id(in, "mailbox_id"), administration = optional_id(in, "administration_id");
    r.contact_id = optional_id(in, "contact_id");
    r.administration_id = administration;
    auto op = store_transact(s.store, [r, mailbox, administration, p](pqxx::work& tx) {
      if (r.contact_id && tx.exec_params("SELECT 1 FROM contacts WHERE id = $1", *r.contact_id).empty())
        invalid("contact_id", "no contact with id " + std::to_string(*r.contact_id));
      const Sender sender = choose_sender(tx, p, mailbox, administration);
      return load_row(tx, queue(tx, r, sender, p), p);
    });
    auto row = co_await std::move(op);
    s.outbox_wake();
    co_return json_response(202, row);
  });

  api.add("POST", "/api/v1/mail/template", kMailSend, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    JsonInput in(req.body);
    in.only({"template_id", "contact_id", "mailbox_id", "administration_id", "to", "attachments"});
    TemplateMail m;
    m.template_id = in.integer("template_id", 1, std::numeric_limits<std::int64_t>::max(), true).value();
    m.contact_id = in.integer("contact_id", 1, std::numeric_limits<std::int64_t>::max(), true).value();
    m.to = in.email("to");
    m.mailbox = optional_id(in, "mailbox_id");
    m.administration = optional_id(in, "administration_id");
    m.attachments = read_attachments(in);
    auto op = store_transact(s.store, [m, p](pqxx::work& tx) { return load_row(tx, queue_template_mail(tx, m, p), p); });
    auto row = co_await std::move(op);
    s.outbox_wake();
    co_return json_response(202, row);
  });

  // Invoice mails use the administration's template for the kind, with the nota_* fields.
  api.add("POST", "/api/v1/mail/invoice", kMailSend, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    JsonInput in(req.body);
    in.only({"administration_id", "contact_id", "kind", "number", "date", "due_date", "amount", "mailbox_id", "to", "attachments"});
    static const std::map<std::string, std::string> kTemplateColumn = {{"first_transfer", "invoice_transfer_template_id"},
                                                                      {"first_direct_debit", "invoice_direct_debit_template_id"},
                                                                      {"reminder", "reminder_template_id"},
                                                                      {"dunning", "dunning_template_id"}};
    const std::string kind = in.text("kind", true, 30).value();
    if (!kTemplateColumn.count(kind)) invalid("kind", "kind must be one of first_transfer, first_direct_debit, reminder, dunning");
    TemplateMail m;
    m.kind = "invoice";
    m.administration = in.integer("administration_id", 1, std::numeric_limits<std::int64_t>::max(), true);
    m.contact_id = in.integer("contact_id", 1, std::numeric_limits<std::int64_t>::max(), true).value();
    m.to = in.email("to");
    m.mailbox = optional_id(in, "mailbox_id");
    m.values["nota_nummer"] = in.text("number", true, 50).value();
    m.values["nota_datum"] = in.text("date", false, 30).value_or("");
    m.values["nota_vervaldatum"] = in.text("due_date", false, 30).value_or("");
    m.values["nota_bedrag"] = in.text("amount", false, 30).value_or("");
    m.attachments = read_attachments(in);
    const std::string column = kTemplateColumn.at(kind);
    auto op = store_transact(s.store, [m, p, column, kind](pqxx::work& tx) mutable {
      auto a = tx.exec_params("SELECT " + column + " FROM administrations WHERE id = $1", *m.administration);
      if (a.empty()) invalid("administration_id", "no administration with id " + std::to_string(*m.administration));
      if (a[0][0].is_null())
        throw ApiError(409, "no_template", "administration " + std::to_string(*m.administration) + " has no template for " + kind + " invoices", "kind");
      m.template_id = a[0][0].as<std::int64_t>();
      return load_row(tx, queue_template_mail(tx, m, p), p);
    });
    auto row = co_await std::move(op);
    s.outbox_wake();
    co_return json_response(202, row);
  });

  api.add("POST", "/api/v1/groups/{id}/mailing", kMailSend, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    const auto group = path_id(req);
    JsonInput in(req.body);
    in.only({"template_id", "mailbox_id", "administration_id"});
    const auto template_id = in.integer("template_id", 1, std::numeric_limits<std::int64_t>::max(), true).value();
    const auto mailbox = optional_id(in, "mailbox_id"), administration = optional_id(in, "administration_id");
    auto op = store_transact(s.store, [=](pqxx::work& tx) {
      if (tx.exec_params("SELECT 1 FROM contact_groups WHERE id = $1", group).empty())
        throw ApiError(404, "not_found", "no group with id " + std::to_string(group));
      const Template t = load_template(tx, template_id);
      const Sender sender = choose_sender(tx, p, mailbox, administration);
      MergeValues administration_values;
      add_administration_values(tx, administration, administration_values);
      SqlBuilder sql;
      const std::string members = group_members_sql(tx, group, sql);
      std::vector<std::int64_t> contacts;
      const std::string query = sql.with() + "SELECT DISTINCT contact_id FROM (" + members + ") m ORDER BY contact_id";
      for (const auto& r : sql_exec(tx, query, sql))
        contacts.push_back(r[0].as<std::int64_t>());
      json::array skipped;
      int queued = 0;
      for (auto contact : contacts) {
        ContactValues c = contact_values(tx, contact);
        if (c.email.empty()) {
          skipped.emplace_back(json::object{{"contact_id", contact}, {"reason", "no e-mail address"}});
          continue;
        }
        for (const auto& [k, v] : administration_values) c.values[k] = v;
        OutboxRequest r = from_template(t, c.values);
        r.kind = "group_mailing";
        r.to = {c.email};
        r.contact_id = contact;
        r.template_id = template_id;
        r.administration_id = administration;
        r.cause_entity = "group";
        r.cause_id = std::to_string(group);
        queue(tx, r, sender, p);
        ++queued;
      }
      return json::object{{"group_id", group}, {"contacts", static_cast<std::int64_t>(contacts.size())}, {"queued", queued}, {"skipped", skipped}};
    });
    auto result = co_await std::move(op);
    s.outbox_wake();
    co_return json_response(202, result);
  });

  api.add("GET", "/api/v1/outbox", kRead, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    const Page page = page_of(req);
    const std::string state = query_param(req, "state"), kind = query_param(req, "kind");
    static const std::set<std::string> kStates = {"queued", "sending", "sent", "retrying", "failed", "cancelled"};
    if (!state.empty() && !kStates.count(state)) invalid("state", "state must be one of queued, sending, sent, retrying, failed, cancelled");
    const auto mailbox = query_id(req, "mailbox_id");
    auto op = store_transact(s.store, [=](pqxx::work& tx) {
      SqlBuilder sql;
      std::string where = visible_sql(p, sql);
      if (page.after_id) where += " AND o.id < " + sql.param(std::to_string(page.after_id)) + "::bigint";
      if (!state.empty()) where += " AND o.state = " + sql.param(state);
      if (!kind.empty()) where += " AND o.kind = " + sql.param(kind);
      if (mailbox) where += " AND o.mailbox_id = " + sql.param(std::to_string(mailbox)) + "::bigint";
      const std::string query =
          "SELECT " + kOutboxColumns + " FROM outbox o WHERE " + where + " ORDER BY o.id DESC LIMIT " + sql.param(std::to_string(page.limit + 1)) + "::bigint";
      json::array items;
      for (const auto& r : sql_exec(tx, query, sql)) items.emplace_back(outbox_json(r));
      return items;
    });
    auto items = co_await std::move(op);
    co_return page_response(std::move(items), page, [](const json::value& v) { return v.at("id").as_int64(); });
  });

  api.add("GET", "/api/v1/outbox/{id}", kRead, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    const auto id = path_id(req);
    auto op = store_transact(s.store, [id, p](pqxx::work& tx) { return load_row(tx, id, p); });
    co_return json_response(200, co_await std::move(op));
  });

  for (const std::string action : {"retry", "cancel"}) {
    api.add("POST", "/api/v1/outbox/{id}/" + action, kMailSend, [&s, action](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
      const auto id = path_id(req);
      auto op = store_transact(s.store, [id, p, action](pqxx::work& tx) {
        const auto before = load_row(tx, id, p);
        const std::string state(before.at("state").as_string());
        const bool retry = action == "retry";
        const bool allowed = retry ? (state == "failed" || state == "cancelled") : (state == "queued" || state == "retrying" || state == "failed");
        if (!allowed)
          throw ApiError(409, "wrong_state", "a row that is " + state + " cannot be " + (retry ? "retried" : "cancelled"), "state");
        if (retry)
          tx.exec_params("UPDATE outbox SET state = 'queued', next_attempt_at = now(), age_from = now(), updated_at = now() WHERE id = $1", id);
        else
          tx.exec_params("UPDATE outbox SET state = 'cancelled', updated_at = now() WHERE id = $1", id);
        audit_write(tx, p.actor(), "outbox", std::to_string(id), action, {{"state", state, retry ? "queued" : "cancelled"}});
        return load_row(tx, id, p);
      });
      auto row = co_await std::move(op);
      s.outbox_wake();
      co_return json_response(200, row);
    });
  }

  api.add("POST", "/api/v1/mailboxes/{id}/test", kAdmin, [&s](HttpRequest& req, const Principal& p) -> awaitable<HttpResponse> {
    const auto id = path_id(req);
    auto exists = store_transact(s.store, [id](pqxx::work& tx) { return !tx.exec_params("SELECT 1 FROM mailboxes WHERE id = $1", id).empty(); });
    if (!co_await std::move(exists)) throw ApiError(404, "not_found", "no mailbox with id " + std::to_string(id));
    const MailboxTestResult result = co_await test_mailbox_sending(s, id);
    const Actor actor = p.actor();
    auto audit = store_transact(s.store, [id, result, actor](pqxx::work& tx) {
      audit_write(tx, actor, "mailbox", std::to_string(id), "test_send",
                  {{"result", std::nullopt, result.ok ? std::string("ok") : result.step + ": " + result.reply}});
    });
    co_await std::move(audit);
    json::object body{{"ok", result.ok}, {"reply", result.reply}};
    if (!result.ok) body["step"] = result.step;
    co_return json_response(200, body);
  });
}

}  // namespace mailgate
