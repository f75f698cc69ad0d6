// protocol/sender_auth: sender authentication of one received message -- SPF (RFC 7208) with
// libspf2, DKIM (RFC 6376) with libopendkim, DMARC (RFC 7489) with libopendmarc -- and whether
// its header From is authenticated, for the trusted-receiver policy in rules/ (issue 6).
//
// Contract: Checker::check() is blocking (run it on a worker thread, never on an I/O thread) and
// may be called from several threads at once. All DNS goes through protocol/dns with the servers
// of DnsSettings; nothing asks the system resolver unless DnsSettings.servers is empty.
// - SPF checks the client IP against MAIL FROM's domain, or the HELO name for the null sender.
// - DKIM verifies every signature (at most 8; more are ignored). A signature whose l= leaves part
//   of the body unsigned counts as "policy", not "pass": the unsigned rest could be anything.
// - header_from is the address of the single From field, parsed strictly (RFC 5322); the display
//   name never matters. No From, several From fields, a group or several addresses -> "".
// - Alignment (RFC 7489 3.1): relaxed = the same organisational domain, found with the public
//   suffix list (its rules, including wildcards and exceptions; an unlisted TLD is one label);
//   strict = the same domain. The DMARC record's aspf/adkim choose the mode; without a record both
//   are relaxed. from_authenticated = aligned SPF pass or aligned DKIM pass, with or without a
//   DMARC record (dmarc is then "none").
// - The DMARC record: _dmarc.<From domain>, else _dmarc.<organisational domain> (whose sp= then
//   applies). pct= and reporting (rua/ruf) are ignored.
//
// Failure: a lookup that fails is a result (temperror), never an exception and never a pass; so
// is a broken record (permerror) or a broken message. DnsSettings that do not parse, or a library
// that cannot start (the public suffix list unreadable), throw std::runtime_error (or
// std::invalid_argument) from the constructor; a client_ip that is not an IP address is the
// caller's bug and throws std::invalid_argument from check(). Each check stops asking DNS after
// DnsSettings.check_budget; what is still unanswered then is a temperror.
#pragma once
#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "protocol/dns.hpp"

namespace mailgate::auth {

// servers: "127.0.0.1:5353" or "10.0.0.1"; empty = the system's resolvers. See protocol/dns.
struct DnsSettings {
  std::vector<std::string> servers;
  std::chrono::milliseconds timeout{5000};  // per server and attempt (libresolv: whole seconds)
  int attempts = 2;
  std::chrono::milliseconds check_budget{20000};  // all DNS of one check()
  std::size_t cache_entries = 0;                   // answers kept for their TTL (dns::Settings)
};

struct Input {
  std::string client_ip;    // IPv4 or IPv6, as text
  std::string helo;         // the EHLO/HELO argument
  std::string mail_from;    // the reverse-path without <>; "" = null sender
  std::string raw;          // the message as received (CRLF line ends, dot-unstuffed)
  std::string authserv_id;  // our host name, first in Authentication-Results
};

struct DkimResult {
  std::string result;  // pass fail neutral temperror permerror policy none
  std::string domain, selector;
};

struct Verdict {
  std::string spf;         // pass fail softfail neutral none temperror permerror
  std::string spf_domain;  // the domain SPF checked (MAIL FROM's, or HELO's for the null sender)
  std::vector<DkimResult> dkim;
  std::string dmarc;         // pass fail none temperror permerror
  std::string dmarc_policy;  // none quarantine reject ("" when no record)
  std::string header_from;   // the address of the single header From; "" if missing/several/unparseable
  std::string header_from_domain;
  bool spf_aligned = false, dkim_aligned = false;
  bool from_authenticated = false;
  // The header field's value (RFC 8601), e.g. "mx.example.nl; spf=pass
  // smtp.mailfrom=a@b.nl; dkim=pass header.d=b.nl header.s=sel; dmarc=pass header.from=b.nl".
  std::string authentication_results;
  // Why results are not pass (a DNS error, a record that does not parse, ...), for the caller's
  // log line; never shown to the peer.
  std::vector<std::string> notes;
};

class Checker {
 public:
  explicit Checker(DnsSettings dns, std::filesystem::path public_suffix_list = "/usr/share/publicsuffix/public_suffix_list.dat");
  ~Checker();
  Checker(const Checker&) = delete;
  Checker& operator=(const Checker&) = delete;

  Verdict check(const Input& in) const;

  // The organisational domain of an ASCII lower-case domain under the public suffix list:
  // "mail.example.co.uk" -> "example.co.uk"; a public suffix itself -> "".
  std::string organizational_domain(const std::string& domain) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mailgate::auth
