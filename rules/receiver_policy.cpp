// rules/receiver_policy: see the header for the order of the checks and why.
#include "rules/receiver_policy.hpp"

#include <algorithm>
#include <cctype>

namespace mailgate {

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string domain_of(const std::string& address) {
  const auto at = address.rfind('@');
  return at == std::string::npos ? std::string() : address.substr(at + 1);
}

std::string local_of(const std::string& address) {
  const auto at = address.rfind('@');
  return at == std::string::npos ? address : address.substr(0, at);
}

// The entry that lets `from` in, or "".
std::string whitelist_match(const ReceiverRules& rules, const std::string& from) {
  const std::string domain = domain_of(from);
  for (const auto& e : rules.whitelist) {
    if (e.kind == "domain" && !domain.empty() && lower(e.value) == domain) return "domain:" + domain;
    if (e.kind == "address" && lower(e.value) == from) return "address:" + from;
    if (e.kind == "verified_users" && rules.verified_user_addresses.count(from)) return "verified_users";
  }
  return {};
}

std::string extension_of(const std::string& filename) {
  const auto dot = filename.rfind('.');
  return dot == std::string::npos ? std::string() : lower(filename.substr(dot + 1));
}

}  // namespace

bool attachment_accepted(const ReceivedAttachment& a, const std::vector<std::string>& accepted_types) {
  const std::string type = lower(a.content_type);
  if (std::find(accepted_types.begin(), accepted_types.end(), type) != accepted_types.end()) return true;
  if (type != "application/octet-stream") return false;
  const std::string ext = extension_of(a.filename);
  for (const auto& t : accepted_types) {
    const auto slash = t.find('/');
    if (slash != std::string::npos && !ext.empty() && t.substr(slash + 1) == ext) return true;
  }
  return false;
}

ReceiverVerdict judge_received_message(const ReceiverRules& rules, const ReceivedFacts& facts) {
  ReceiverVerdict v;
  const std::string from = lower(facts.header_from);
  std::string matched;
  if (!from.empty() && (facts.from_authenticated || rules.allow_unauthenticated)) matched = whitelist_match(rules, from);
  if (matched.empty()) {
    v.action = ReceiverVerdict::Action::reject_not_whitelisted;
    v.code = 550;
    v.enhanced = "5.7.1";
    if (from.empty())
      v.reason = "the message needs exactly one From address";
    else if (!facts.from_authenticated && !rules.allow_unauthenticated && !whitelist_match(rules, from).empty())
      v.reason = "the sender " + from + " is not authenticated (no aligned SPF or DKIM pass)";
    else
      v.reason = "the sender " + from + " may not send to this address";
    return v;
  }
  auto reject = [&](std::string reason) {
    v.action = ReceiverVerdict::Action::reject_rule;
    v.code = 550;
    v.enhanced = "5.7.1";
    v.reason = std::move(reason);
    return v;
  };
  if (rules.require_tls && !facts.tls) {
    reject("this address accepts mail only over TLS (STARTTLS)");
    v.enhanced = "5.7.10";  // "encryption needed" (RFC 5248 registry)
    return v;
  }
  if (rules.max_message_bytes && facts.size > *rules.max_message_bytes) {
    reject("the message is larger than this address accepts (" + std::to_string(*rules.max_message_bytes) + " bytes)");
    v.code = 552;
    v.enhanced = "5.3.4";
    return v;
  }
  if (!rules.accepted_types.empty()) {
    const bool any = std::any_of(facts.attachments.begin(), facts.attachments.end(),
                                 [&](const ReceivedAttachment& a) { return attachment_accepted(a, rules.accepted_types); });
    if (!any) {
      std::string types;
      for (const auto& t : rules.accepted_types) types += (types.empty() ? "" : ", ") + t;
      return reject("the message has no attachment of an accepted type (" + types + ")");
    }
  }
  v.matched_entry = matched;
  v.latch_tls = facts.tls && !rules.require_tls;
  v.reason = "message accepted";
  return v;
}

RejectionDecision rejection_allowed(const RejectionFacts& f) {
  auto no = [](std::string why) { return RejectionDecision{false, std::move(why)}; };
  if (f.envelope_from.empty()) return no("null sender");
  if (f.auto_submitted) return no("auto-submitted");
  const std::string precedence = lower(f.precedence);
  if (precedence == "bulk" || precedence == "list" || precedence == "junk") return no("precedence " + precedence);
  if (f.list_headers) return no("list mail");
  // RFC 3834 5.2 and common practice: never answer system and no-reply senders.
  std::string local = lower(local_of(f.envelope_from));
  local.erase(std::remove_if(local.begin(), local.end(), [](char c) { return c == '-' || c == '_' || c == '.'; }), local.end());
  for (const char* p : {"mailerdaemon", "postmaster", "noreply", "donotreply", "dontreply", "bounce", "listserv", "majordomo"})
    if (local.rfind(p, 0) == 0) return no("system sender");
  if (f.sent_last_hour >= f.limit_per_hour) return no("rate limit");
  return {true, {}};
}

std::string receiver_local_part(const std::string& organisation_name, const std::string& random) {
  std::string slug;
  bool dash = false;
  const std::string& s = organisation_name;
  for (std::size_t i = 0; i < s.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    char out = 0;
    if (std::isalnum(c)) {
      out = static_cast<char>(std::tolower(c));
    } else if (c == 0xC3 && i + 1 < s.size()) {
      // Latin-1 supplement letters in UTF-8 (à..ÿ, À..ß): fold to their base letter.
      // U+00C0..U+00DF and U+00E0..U+00FF fold alike ('/' marks × and ÷), but for ß and ÿ.
      static const char* const kFold = "aaaaaaaceeeeiiiidnooooo/ouuuuyts";
      const unsigned char d = static_cast<unsigned char>(s[i + 1]);
      if (d >= 0x80 && d <= 0xBF) {
        const char f = d == 0xBF ? 'y' : kFold[(d - 0x80) % 32];
        if (f != '/') out = f;
        ++i;
      }
    }
    if (out) {
      if (dash && !slug.empty()) slug.push_back('-');
      dash = false;
      slug.push_back(out);
    } else {
      dash = true;
    }
    if (slug.size() >= 30) break;
  }
  while (!slug.empty() && slug.back() == '-') slug.pop_back();
  if (slug.empty()) slug = "org";
  return slug + "-" + random;
}

}  // namespace mailgate
