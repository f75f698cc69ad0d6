// rules/receiver_policy: one row per message at the end of DATA, with the verdict it must get;
// one row per rejection question; the generated local parts.
#include <gtest/gtest.h>

#include "rules/receiver_policy.hpp"

namespace mailgate {
namespace {

using Action = ReceiverVerdict::Action;

ReceiverRules base_rules() {
  ReceiverRules r;
  r.accepted_types = {"application/pdf", "application/xml", "text/xml"};
  r.whitelist = {{"domain", "leverancier.nl"}, {"address", "facturen@andere.nl"}, {"verified_users", ""}};
  r.verified_user_addresses = {"boekhouder@coop.nl"};
  return r;
}

ReceivedFacts pdf_from(const std::string& from, bool authenticated = true, bool tls = true) {
  ReceivedFacts f;
  f.header_from = from;
  f.from_authenticated = authenticated;
  f.tls = tls;
  f.size = 50000;
  f.attachments = {{"application/pdf", "factuur-2026-001.pdf"}};
  return f;
}

struct Row {
  const char* name;
  ReceiverRules rules;
  ReceivedFacts facts;
  Action action;
  int code;
  std::string reason_part;  // must occur in the reason
  bool latch = false;
};

class ReceiverPolicy : public ::testing::TestWithParam<Row> {};

TEST_P(ReceiverPolicy, Table) {
  const Row& row = GetParam();
  const auto v = judge_received_message(row.rules, row.facts);
  EXPECT_EQ(v.action, row.action) << v.reason;
  EXPECT_EQ(v.code, row.code);
  EXPECT_NE(v.reason.find(row.reason_part), std::string::npos) << v.reason;
  EXPECT_EQ(v.latch_tls, row.latch);
}

ReceiverRules with(std::function<void(ReceiverRules&)> f) {
  auto r = base_rules();
  f(r);
  return r;
}
ReceivedFacts facts_with(ReceivedFacts f, std::function<void(ReceivedFacts&)> g) {
  g(f);
  return f;
}

INSTANTIATE_TEST_SUITE_P(
    Rows, ReceiverPolicy,
    ::testing::Values(
        Row{"domain_entry", base_rules(), pdf_from("piet@leverancier.nl"), Action::accept, 250, "accepted", true},
        Row{"domain_case_insensitive", base_rules(), pdf_from("Piet@LEVERANCIER.nl"), Action::accept, 250, "accepted", true},
        Row{"subdomain_is_not_the_domain", base_rules(), pdf_from("piet@mail.leverancier.nl"), Action::reject_not_whitelisted, 550,
            "may not send"},
        Row{"lookalike_domain", base_rules(), pdf_from("piet@leverancier.nl.evil.example"), Action::reject_not_whitelisted, 550,
            "may not send"},
        Row{"address_entry", base_rules(), pdf_from("facturen@andere.nl"), Action::accept, 250, "accepted", true},
        Row{"other_address_same_domain", base_rules(), pdf_from("directeur@andere.nl"), Action::reject_not_whitelisted, 550,
            "may not send"},
        Row{"verified_user", base_rules(), pdf_from("boekhouder@coop.nl"), Action::accept, 250, "accepted", true},
        Row{"verified_users_entry_missing",
            with([](ReceiverRules& r) { r.whitelist = {{"domain", "leverancier.nl"}}; }), pdf_from("boekhouder@coop.nl"),
            Action::reject_not_whitelisted, 550, "may not send"},
        Row{"unauthenticated_refused", base_rules(), pdf_from("piet@leverancier.nl", false), Action::reject_not_whitelisted, 550,
            "not authenticated"},
        Row{"unauthenticated_allowed", with([](ReceiverRules& r) { r.allow_unauthenticated = true; }),
            pdf_from("piet@leverancier.nl", false), Action::accept, 250, "accepted", true},
        Row{"no_from", base_rules(), pdf_from(""), Action::reject_not_whitelisted, 550, "exactly one From"},
        Row{"tls_required_not_used", with([](ReceiverRules& r) { r.require_tls = true; }),
            pdf_from("piet@leverancier.nl", true, false), Action::reject_rule, 550, "only over TLS"},
        Row{"tls_required_used_no_latch_again", with([](ReceiverRules& r) { r.require_tls = true; }), pdf_from("piet@leverancier.nl"),
            Action::accept, 250, "accepted", false},
        Row{"plain_accepted_no_latch", base_rules(), pdf_from("piet@leverancier.nl", true, false), Action::accept, 250, "accepted",
            false},
        Row{"not_whitelisted_beats_tls_rule", with([](ReceiverRules& r) { r.require_tls = true; }),
            pdf_from("x@evil.example", true, false), Action::reject_not_whitelisted, 550, "may not send"},
        Row{"too_large", with([](ReceiverRules& r) { r.max_message_bytes = 40000; }), pdf_from("piet@leverancier.nl"),
            Action::reject_rule, 552, "larger"},
        Row{"no_attachment", base_rules(),
            facts_with(pdf_from("piet@leverancier.nl"), [](ReceivedFacts& f) { f.attachments.clear(); }), Action::reject_rule, 550,
            "no attachment of an accepted type"},
        Row{"only_an_image", base_rules(),
            facts_with(pdf_from("piet@leverancier.nl"), [](ReceivedFacts& f) { f.attachments = {{"image/png", "logo.png"}}; }),
            Action::reject_rule, 550, "application/pdf"},
        Row{"octet_stream_named_pdf", base_rules(),
            facts_with(pdf_from("piet@leverancier.nl"),
                       [](ReceivedFacts& f) { f.attachments = {{"application/octet-stream", "Factuur.PDF"}}; }),
            Action::accept, 250, "accepted", true},
        Row{"octet_stream_named_exe", base_rules(),
            facts_with(pdf_from("piet@leverancier.nl"),
                       [](ReceivedFacts& f) { f.attachments = {{"application/octet-stream", "factuur.pdf.exe"}}; }),
            Action::reject_rule, 550, "no attachment"},
        Row{"xml_invoice", base_rules(),
            facts_with(pdf_from("piet@leverancier.nl"), [](ReceivedFacts& f) { f.attachments = {{"Text/XML", "ubl.xml"}}; }),
            Action::accept, 250, "accepted", true},
        Row{"any_message_when_no_types", with([](ReceiverRules& r) { r.accepted_types.clear(); }),
            facts_with(pdf_from("piet@leverancier.nl"), [](ReceivedFacts& f) { f.attachments.clear(); }), Action::accept, 250,
            "accepted", true}),
    [](const auto& info) { return std::string(info.param.name); });

struct RejectionRow {
  const char* name;
  RejectionFacts facts;
  bool send;
  std::string why_not;
};

class Rejection : public ::testing::TestWithParam<RejectionRow> {};

TEST_P(Rejection, Table) {
  const auto d = rejection_allowed(GetParam().facts);
  EXPECT_EQ(d.send, GetParam().send);
  EXPECT_EQ(d.why_not, GetParam().why_not);
}

RejectionFacts from(std::string envelope) {
  RejectionFacts f;
  f.envelope_from = std::move(envelope);
  return f;
}

INSTANTIATE_TEST_SUITE_P(
    Rows, Rejection,
    ::testing::Values(
        RejectionRow{"ordinary", from("piet@leverancier.nl"), true, ""},
        RejectionRow{"null_sender", from(""), false, "null sender"},
        RejectionRow{"auto_submitted", [] { auto f = from("piet@leverancier.nl"); f.auto_submitted = true; return f; }(), false,
                     "auto-submitted"},
        RejectionRow{"precedence_bulk", [] { auto f = from("piet@leverancier.nl"); f.precedence = "Bulk"; return f; }(), false,
                     "precedence bulk"},
        RejectionRow{"list", [] { auto f = from("piet@leverancier.nl"); f.list_headers = true; return f; }(), false, "list mail"},
        RejectionRow{"mailer_daemon", from("MAILER-DAEMON@leverancier.nl"), false, "system sender"},
        RejectionRow{"postmaster", from("postmaster@leverancier.nl"), false, "system sender"},
        RejectionRow{"no_reply", from("no-reply@leverancier.nl"), false, "system sender"},
        RejectionRow{"noreply_suffixed", from("noreply.facturen@leverancier.nl"), false, "system sender"},
        RejectionRow{"do_not_reply", from("do_not_reply@leverancier.nl"), false, "system sender"},
        RejectionRow{"bounces", from("bounces+123@leverancier.nl"), false, "system sender"},
        RejectionRow{"reply_in_the_middle_is_fine", from("replyteam@leverancier.nl"), true, ""},
        RejectionRow{"under_limit", [] { auto f = from("piet@leverancier.nl"); f.sent_last_hour = 4; return f; }(), true, ""},
        RejectionRow{"at_limit", [] { auto f = from("piet@leverancier.nl"); f.sent_last_hour = 5; return f; }(), false,
                     "rate limit"},
        RejectionRow{"limit_zero", [] { auto f = from("piet@leverancier.nl"); f.limit_per_hour = 0; return f; }(), false,
                     "rate limit"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(ReceiverLocalPart, Slugs) {
  EXPECT_EQ(receiver_local_part("Energiecoöperatie Zon & Wind", "k3x9a2b7mq4p"), "energiecooperatie-zon-wind-k3x9a2b7mq4p");
  EXPECT_EQ(receiver_local_part("  --ÀÉÎÕÜ ß ÿ-- ", "r"), "aeiou-s-y-r");
  EXPECT_EQ(receiver_local_part("€€€", "r"), "org-r");
  EXPECT_EQ(receiver_local_part("Een heel erg lange naam van een organisatie", "r"), "een-heel-erg-lange-naam-van-ee-r");
  EXPECT_EQ(receiver_local_part("A×B", "r"), "a-b-r");
}

}  // namespace
}  // namespace mailgate
