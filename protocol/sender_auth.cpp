// protocol/sender_auth: how the three libraries are wired to protocol/dns, and the quirks of
// Debian 12's versions that this file works around (each checked by a test in
// tests/protocol/sender_auth_test.cpp):
//
// - libspf2 1.2.10: a custom DNS layer (SPF_dns_server_t), one per check, whose lookup asks
//   protocol/dns. libspf2's own resolv layer cannot be given servers or ports (it res_ninit()s a
//   thread-local state from /etc/resolv.conf). The layer also takes over get_spf, i.e. finding the
//   record, because the library's version asks for the obsolete SPF RR type first (a wasted
//   question per domain), does not recognise a bare "v=spf1", and reports a record that does not
//   compile as "none" instead of permerror. SPF_request_query_mailfrom() is not used: it passes
//   every loopback client ("localhost always gets a free ride"), which would let anyone who relays
//   through a local proxy, and every end-to-end test, pass SPF.
// - libopendkim 2.11: its DNS hooks (dkim_dns_set_query_start/waitreply/cancel) run the question
//   through protocol/dns synchronously in query_start and hand back the raw reply, which the
//   library parses itself. The hooks get no per-message context, so the check's deadline reaches
//   them through a thread-local (a check runs on one thread from start to end).
// - libopendmarc 1.4.2: the _dmarc record is looked up here and handed over with
//   opendmarc_policy_store_dmarc() (the library's own lookup would ask the system resolver).
//   Alignment is decided here, not by the library: its opendmarc_reverse_domain() drops a
//   one-character leftmost label, so "x.com" becomes "com" and its relaxed alignment then accepts
//   any other .com domain (an SPF pass for evil.com authenticates From: ceo@x.com); its strict mode
//   accepts subdomains; and its public suffix lookup ignores wildcard rules. The organisational
//   domain comes from our own reading of the same public suffix list. The library's verdict is
//   still computed and a disagreement is noted. Its public suffix table is process-wide, so it is
//   loaded by the first Checker and freed by the last.
#include "protocol/sender_auth.hpp"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netdb.h>

extern "C" {
#include <spf2/spf.h>
#include <spf2/spf_dns.h>
#include <spf2/spf_record.h>
}
#define _Bool bool  // dkim.h is C99; _Bool and C++'s bool share the x86-64 ABI
#include <dkim.h>
#undef _Bool
#include <opendmarc/dmarc.h>
#include <idn2.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <fstream>
#include <mutex>
#include <stdexcept>
#include <string_view>
#include <unordered_set>
#include <variant>

#include "protocol/gmime_util.hpp"
#include "rules/address.hpp"

namespace mailgate::auth {

namespace {

constexpr int kMaxSignatures = 8;  // DKIM signatures verified per message; the rest are ignored

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

// ---------------------------------------------------------------------------------------------
// The public suffix list (https://publicsuffix.org/list/), its algorithm in full: normal rules,
// wildcards ("*.ck"), exceptions ("!www.ck"), and the default rule "*" for unlisted TLDs.

class PublicSuffixList {
 public:
  explicit PublicSuffixList(const std::filesystem::path& file) {
    std::ifstream in(file);
    if (!in) throw std::runtime_error("cannot read the public suffix list " + file.string());
    std::string line;
    while (std::getline(in, line)) {
      auto end = line.find_first_of(" \t\r");
      std::string rule = line.substr(0, end);
      if (rule.empty() || rule.starts_with("//")) continue;
      auto* set = &rules_;
      if (rule.starts_with("!")) {
        set = &exceptions_;
        rule.erase(0, 1);
      } else if (rule.starts_with("*.")) {
        set = &wildcards_;
        rule.erase(0, 2);
      }
      if (std::any_of(rule.begin(), rule.end(), [](unsigned char c) { return c >= 0x80; })) {
        char* ascii = nullptr;
        if (idn2_to_ascii_8z(rule.c_str(), &ascii, IDN2_NONTRANSITIONAL | IDN2_NFC_INPUT) != IDN2_OK) continue;
        rule = ascii;
        idn2_free(ascii);
      }
      set->insert(lower(rule));
    }
    if (rules_.empty()) throw std::runtime_error("the public suffix list " + file.string() + " has no rules");
  }

  // "" when `domain` is itself a public suffix.
  std::string organizational_domain(std::string_view domain) const {
    std::vector<std::size_t> starts{0};  // where each suffix (labels i..) begins
    for (std::size_t i = 0; i < domain.size(); ++i)
      if (domain[i] == '.') starts.push_back(i + 1);
    const std::size_t n = starts.size();
    auto suffix = [&](std::size_t i) { return std::string(domain.substr(starts[i])); };
    std::size_t suffix_labels = 1;  // the default rule "*"
    bool found = false;
    for (std::size_t i = 0; i < n && !found; ++i)
      if (exceptions_.count(suffix(i))) {
        suffix_labels = n - i - 1;
        found = true;
      }
    for (std::size_t i = 0; i < n && !found; ++i)
      if (rules_.count(suffix(i)) || (i + 1 < n && wildcards_.count(suffix(i + 1)))) {
        suffix_labels = n - i;
        found = true;
      }
    if (suffix_labels >= n) return {};
    return std::string(domain.substr(starts[n - suffix_labels - 1]));
  }

 private:
  std::unordered_set<std::string> rules_, wildcards_, exceptions_;
};

// ---------------------------------------------------------------------------------------------
// The per-check state the library callbacks need.

struct CheckContext {
  const dns::Resolver* resolver;
  dns::Clock::time_point deadline;
  std::vector<std::string>* notes;

  void note_dns(const char* who, std::string_view name, int type, const std::string& error) const {
    notes->push_back(std::string(who) + ": DNS " + std::string(name) + " type " + std::to_string(type) + ": " + error);
  }
};

thread_local const CheckContext* t_check = nullptr;  // for libopendkim's DNS hooks

// Reads an IP literal; IPv4-mapped IPv6 counts as IPv4.
struct ClientIp {
  bool v6 = false;
  in_addr v4{};
  in6_addr addr6{};
  std::string text;
};

ClientIp parse_ip(const std::string& s) {
  ClientIp ip;
  if (inet_pton(AF_INET, s.c_str(), &ip.v4) == 1) {
    ip.text = s;
    return ip;
  }
  if (inet_pton(AF_INET6, s.c_str(), &ip.addr6) != 1) throw std::invalid_argument("sender_auth: client_ip \"" + s + "\" is not an IP address");
  if (IN6_IS_ADDR_V4MAPPED(&ip.addr6)) {
    std::memcpy(&ip.v4, ip.addr6.s6_addr + 12, 4);
    char buf[INET_ADDRSTRLEN];
    ip.text = inet_ntop(AF_INET, &ip.v4, buf, sizeof buf);
    return ip;
  }
  ip.v6 = true;
  char buf[INET6_ADDRSTRLEN];
  ip.text = inet_ntop(AF_INET6, &ip.addr6, buf, sizeof buf);
  return ip;
}

// A domain in the form DNS and alignment use (ASCII, lower case), or "" if it is not one.
std::string dns_domain(std::string_view d) {
  auto n = normalize_domain(d);
  return std::holds_alternative<std::string>(n) ? std::get<std::string>(n) : std::string();
}

// ---------------------------------------------------------------------------------------------
// The header From.

struct HeaderFrom {
  std::string address, domain;
  std::string problem;
};

HeaderFrom parse_header_from(std::string_view raw) {
  // The header block, unfolded, one field per entry.
  std::vector<std::string> from_values;
  std::string* current = nullptr;
  std::size_t pos = 0;
  while (pos < raw.size()) {
    auto eol = raw.find('\n', pos);
    std::string_view line = raw.substr(pos, eol == std::string_view::npos ? std::string_view::npos : eol - pos);
    pos = eol == std::string_view::npos ? raw.size() : eol + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) break;  // end of the header block
    if (line.front() == ' ' || line.front() == '\t') {
      if (current) current->append(line);
      continue;
    }
    current = nullptr;
    const auto colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string_view name = line.substr(0, colon);
    while (!name.empty() && (name.back() == ' ' || name.back() == '\t')) name.remove_suffix(1);  // obsolete "From :"
    if (iequals(name, "from")) {
      from_values.emplace_back(line.substr(colon + 1));
      current = &from_values.back();
    }
  }
  HeaderFrom hf;
  if (from_values.empty()) {
    hf.problem = "the message has no From field";
    return hf;
  }
  if (from_values.size() > 1) {
    hf.problem = "the message has " + std::to_string(from_values.size()) + " From fields";
    return hf;
  }
  gmime::init();
  GMimeParserOptions* options = g_mime_parser_options_new();
  // Strict: the loose parser reads "a" <boss@trusted.nl@evil.example> as boss@trusted.nl.
  g_mime_parser_options_set_address_compliance_mode(options, GMIME_RFC_COMPLIANCE_STRICT);
  gmime::Ptr<InternetAddressList> list(internet_address_list_parse(options, from_values.front().c_str()));
  g_mime_parser_options_free(options);
  if (!list || internet_address_list_length(list.get()) != 1 ||
      !INTERNET_ADDRESS_IS_MAILBOX(internet_address_list_get_address(list.get(), 0))) {
    hf.problem = "the From field is not exactly one address";
    return hf;
  }
  const char* addr = internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(internet_address_list_get_address(list.get(), 0)));
  auto normal = normalize_email(addr ? addr : "");
  if (auto* e = std::get_if<AddressError>(&normal)) {
    hf.problem = "the From address is not valid: " + e->reason;
    return hf;
  }
  hf.address = std::get<std::string>(normal);
  hf.domain = std::string(email_domain(hf.address));
  return hf;
}

// ---------------------------------------------------------------------------------------------
// libspf2

SPF_dns_rr_t* spf_dns_lookup(SPF_dns_server_t* server, const char* domain, ns_type type, int /*should_cache*/) {
  const auto* ctx = static_cast<const CheckContext*>(server->hook);
  if (type == ns_t_spf) return SPF_dns_rr_new_init(server, domain, type, 0, NO_DATA);  // RFC 7208 3.1: no longer asked
  const dns::Answer a = ctx->resolver->query(domain, type, ctx->deadline);
  SPF_dns_stat_t herrno = a.status == dns::Status::nxdomain ? HOST_NOT_FOUND
                          : a.status == dns::Status::temporary ? TRY_AGAIN
                          : a.records.empty()                  ? NO_DATA
                                                               : NETDB_SUCCESS;
  if (a.status == dns::Status::temporary) ctx->note_dns("spf", domain, type, a.error);
  SPF_dns_rr_t* rr = SPF_dns_rr_new_init(server, domain, type, 0, herrno);
  if (!rr || herrno != NETDB_SUCCESS) return rr;
  int n = 0;
  for (const auto& rec : a.records) {
    const std::size_t size = type == ns_t_a ? sizeof(in_addr) : type == ns_t_aaaa ? sizeof(in6_addr) : rec.size() + 1;
    if (SPF_dns_rr_buf_realloc(rr, n, size) != SPF_E_SUCCESS) break;
    if (type == ns_t_a || type == ns_t_aaaa)
      std::memcpy(rr->rr[n], rec.data(), size);
    else
      std::memcpy(rr->rr[n]->txt, rec.c_str(), size);  // txt, mx and ptr share the union's storage
    ++n;
  }
  rr->num_rr = n;
  return rr;
}

// Finds and compiles the SPF record of the request's current domain (RFC 7208 4.4, 4.5).
SPF_errcode_t spf_get_record(SPF_server_t* server, SPF_request_t* request, SPF_response_t* response, SPF_record_t** record) {
  const auto* ctx = static_cast<const CheckContext*>(server->resolver->hook);
  const char* domain = request->cur_dom;
  *record = nullptr;
  const dns::Answer a = ctx->resolver->query(domain, dns::type::txt, ctx->deadline);
  if (a.status == dns::Status::temporary) {
    ctx->note_dns("spf", domain, dns::type::txt, a.error);
    return SPF_response_add_error(response, SPF_E_DNS_ERROR, "Temporary DNS failure for '%s'.", domain);
  }
  std::vector<const std::string*> found;
  for (const auto& txt : a.records)
    if (iequals(std::string_view(txt).substr(0, 6), "v=spf1") && (txt.size() == 6 || txt[6] == ' ')) found.push_back(&txt);
  if (found.empty()) return SPF_response_add_error(response, SPF_E_NOT_SPF, "No SPF record for '%s'.", domain);
  if (found.size() > 1) return SPF_response_add_error(response, SPF_E_MULTIPLE_RECORDS, "Multiple SPF records for '%s'.", domain);
  // A bare "v=spf1" is a record without mechanisms (neutral); libspf2's compiler wants the space.
  const std::string text = "v=spf1" + (found.front()->size() == 6 ? std::string(" ") : found.front()->substr(6));
  SPF_errcode_t err = SPF_record_compile(server, response, record, text.c_str());
  if (err != SPF_E_SUCCESS) {
    ctx->notes->push_back("spf: the record of " + std::string(domain) + " does not compile: " + SPF_strerror(err));
    if (*record) SPF_record_free(*record);
    *record = nullptr;
  }
  return err;
}

const char* spf_result_name(SPF_result_t r) {
  switch (r) {
    case SPF_RESULT_PASS: return "pass";
    case SPF_RESULT_FAIL: return "fail";
    case SPF_RESULT_SOFTFAIL: return "softfail";
    case SPF_RESULT_NEUTRAL: return "neutral";
    case SPF_RESULT_NONE: return "none";
    case SPF_RESULT_TEMPERROR: return "temperror";
    default: return "permerror";
  }
}

void spf_log_quiet(const char*, int, const char*) {}

// Checks `domain` (ASCII) for the client: the result name.
std::string spf_check(const CheckContext& ctx, const ClientIp& ip, const std::string& helo, const std::string& sender,
                      const std::string& domain, const std::string& authserv_id) {
  SPF_dns_server_t layer{};
  layer.destroy = nullptr;  // owned here, not by SPF_server_free
  layer.lookup = spf_dns_lookup;
  layer.get_spf = spf_get_record;
  layer.name = "mailgate";
  layer.hook = const_cast<CheckContext*>(&ctx);
  SPF_server_t* server = SPF_server_new_dns(&layer, 0);
  if (!server) throw std::runtime_error("libspf2: cannot create a server");
  SPF_server_set_rec_dom(server, authserv_id.empty() ? nullptr : authserv_id.c_str());
  SPF_request_t* request = SPF_request_new(server);
  SPF_response_t* response = nullptr;
  std::string result = "permerror";
  if (request) {
    if (ip.v6)
      SPF_request_set_ipv6(request, ip.addr6);
    else
      SPF_request_set_ipv4(request, ip.v4);
    SPF_request_set_helo_dom(request, helo.empty() ? "unknown" : helo.c_str());
    SPF_request_set_env_from(request, sender.c_str());
    request->cur_dom = request->env_from_dp;
    response = SPF_response_new(request);
  }
  if (response && request->cur_dom) {
    SPF_record_t* record = nullptr;
    SPF_errcode_t err = SPF_server_get_record(server, request, response, &record);
    if (err == SPF_E_SUCCESS && record) {
      response->spf_record_exp = record;
      SPF_record_interpret(record, request, response, 0);
      SPF_record_free(record);
      result = spf_result_name(SPF_response_result(response));
      if (result == "temperror" || result == "permerror")
        ctx.notes->push_back("spf: " + result + " for " + domain + ": " + SPF_strerror(SPF_response_errcode(response)));
    } else if (err == SPF_E_DNS_ERROR) {
      result = "temperror";
    } else if (err == SPF_E_NOT_SPF) {
      result = "none";
    } else {
      result = "permerror";
      ctx.notes->push_back("spf: permerror for " + domain + ": " + SPF_strerror(err));
    }
  }
  if (response) SPF_response_free(response);
  if (request) SPF_request_free(request);
  SPF_server_free(server);
  return result;
}

// ---------------------------------------------------------------------------------------------
// libopendkim

struct DkimQuery {
  int status = DKIM_DNS_ERROR;
  std::size_t length = 0;
};

int dkim_query_start(void* service, int type, unsigned char* name, unsigned char* buf, std::size_t buflen, void** handle) {
  const auto* resolver = static_cast<const dns::Resolver*>(service);
  const CheckContext* ctx = t_check;
  if (!ctx || !resolver) return DKIM_DNS_ERROR;
  const std::string qname(reinterpret_cast<const char*>(name));
  dns::Reply reply = resolver->query_raw(qname, type, ctx->deadline);
  auto* q = new DkimQuery;
  if (reply.status == dns::Status::temporary || reply.wire.empty() || reply.wire.size() > buflen) {
    ctx->note_dns("dkim", qname, type, reply.error.empty() ? "the reply does not fit" : reply.error);
  } else {
    std::memcpy(buf, reply.wire.data(), reply.wire.size());
    q->length = reply.wire.size();
    q->status = DKIM_DNS_SUCCESS;
  }
  *handle = q;
  return DKIM_DNS_SUCCESS;
}

// The answer is complete when query_start returns; an error reaches the library as KEYFAIL.
int dkim_query_waitreply(void*, void* handle, struct timeval*, std::size_t* bytes, int* error, int* dnssec) {
  const auto* q = static_cast<const DkimQuery*>(handle);
  if (bytes) *bytes = q->length;
  if (error) *error = 0;
  if (dnssec) *dnssec = DKIM_DNSSEC_UNKNOWN;
  return q->status;
}

int dkim_query_cancel(void*, void* handle) {  // called once for every started query
  delete static_cast<DkimQuery*>(handle);
  return DKIM_DNS_SUCCESS;
}

DKIM_CBSTAT dkim_prescreen(DKIM*, DKIM_SIGINFO** sigs, int nsigs) {
  for (int i = kMaxSignatures; i < nsigs; ++i) dkim_sig_ignore(sigs[i]);
  return DKIM_CBSTAT_CONTINUE;
}

std::vector<DkimResult> dkim_check(DKIM_LIB* lib, const std::string& raw, const CheckContext& ctx) {
  std::vector<DkimResult> out;
  DKIM_STAT st = DKIM_STAT_OK;
  DKIM* d = dkim_verify(lib, reinterpret_cast<const unsigned char*>("mailgate"), nullptr, &st);
  if (!d) {
    ctx.notes->push_back(std::string("dkim: cannot start verifying: ") + dkim_getresultstr(st));
    return out;
  }
  dkim_chunk(d, reinterpret_cast<unsigned char*>(const_cast<char*>(raw.data())), raw.size());
  dkim_chunk(d, nullptr, 0);
  dkim_eom(d, nullptr);
  DKIM_SIGINFO** sigs = nullptr;
  int nsigs = 0;
  if (dkim_getsiglist(d, &sigs, &nsigs) == DKIM_STAT_OK) {
    for (int i = 0; i < nsigs; ++i) {
      DKIM_SIGINFO* sig = sigs[i];
      const unsigned int flags = dkim_sig_getflags(sig);
      if (flags & DKIM_SIGFLAG_IGNORE) {
        ctx.notes->push_back("dkim: signature " + std::to_string(i + 1) + " ignored (more than " + std::to_string(kMaxSignatures) + ")");
        continue;
      }
      DkimResult r;
      const char* domain = reinterpret_cast<const char*>(dkim_sig_getdomain(sig));
      const char* selector = reinterpret_cast<const char*>(dkim_sig_getselector(sig));
      r.domain = domain ? domain : "";
      r.selector = selector ? selector : "";
      const int err = dkim_sig_geterror(sig);
      const int bh = dkim_sig_getbh(sig);
      ssize_t msglen = 0, canonlen = 0, signlen = -1;
      dkim_sig_getcanonlen(d, sig, &msglen, &canonlen, &signlen);
      const std::string who = "dkim: d=" + r.domain + " s=" + r.selector + ": ";
      if ((flags & DKIM_SIGFLAG_PASSED) && bh == DKIM_SIGBH_MATCH) {
        if (signlen >= 0 && canonlen < msglen) {
          r.result = "policy";
          ctx.notes->push_back(who + "l= leaves " + std::to_string(msglen - canonlen) + " bytes of the body unsigned");
        } else if (flags & DKIM_SIGFLAG_TESTKEY) {
          r.result = "neutral";  // RFC 6376 3.6.1 t=y: treat as unsigned
          ctx.notes->push_back(who + "the key is in test mode (t=y)");
        } else {
          r.result = "pass";
        }
      } else if (err == DKIM_SIGERROR_KEYFAIL) {
        r.result = "temperror";
      } else if (err == DKIM_SIGERROR_BADSIG || bh == DKIM_SIGBH_MISMATCH) {
        r.result = "fail";
        ctx.notes->push_back(who + (bh == DKIM_SIGBH_MISMATCH ? "the body hash does not match" : "the signature does not verify"));
      } else if (err == DKIM_SIGERROR_KEYTOOSMALL) {
        r.result = "policy";
        ctx.notes->push_back(who + "the key is too small");
      } else if (err == DKIM_SIGERROR_OK && !(flags & DKIM_SIGFLAG_PROCESSED)) {
        r.result = "neutral";
      } else {
        r.result = "permerror";
        const char* text = dkim_sig_geterrorstr(err);
        ctx.notes->push_back(who + (text ? text : "error " + std::to_string(err)));
      }
      out.push_back(std::move(r));
    }
  }
  dkim_free(d);
  return out;
}

// ---------------------------------------------------------------------------------------------
// DMARC

struct DmarcRecord {
  enum { found, none, temporary } state = none;
  std::string text;
  std::string domain;  // where it was found
};

DmarcRecord dmarc_lookup(const CheckContext& ctx, const std::string& domain) {
  DmarcRecord r;
  const std::string name = "_dmarc." + domain;
  const dns::Answer a = ctx.resolver->query(name, dns::type::txt, ctx.deadline);
  if (a.status == dns::Status::temporary) {
    ctx.note_dns("dmarc", name, dns::type::txt, a.error);
    r.state = DmarcRecord::temporary;
    return r;
  }
  std::vector<std::string> records;
  for (const auto& txt : a.records)  // RFC 7489 6.6.3: records not starting with v=DMARC1 are not DMARC
    if (txt.starts_with("v=DMARC1") && (txt.size() == 8 || txt[8] == ';' || txt[8] == ' ' || txt[8] == '\t')) records.push_back(txt);
  if (records.size() > 1) ctx.notes->push_back("dmarc: " + name + " has " + std::to_string(records.size()) + " records; none applies");
  if (records.size() == 1) {
    r.state = DmarcRecord::found;
    r.text = records.front();
    r.domain = domain;
  }
  return r;
}

const char* dmarc_policy_name(int p) {
  switch (p) {
    case DMARC_RECORD_P_NONE: return "none";
    case DMARC_RECORD_P_QUARANTINE: return "quarantine";
    case DMARC_RECORD_P_REJECT: return "reject";
  }
  return "";
}

// libopendmarc's public suffix table is a process-wide global: loaded by the first Checker,
// freed by the last; every Checker of the process must name the same file.
class OpendmarcLibrary {
 public:
  explicit OpendmarcLibrary(const std::string& list) {
    std::lock_guard lock(mutex_);
    if (users_ == 0) {
      OPENDMARC_LIB_T lib;
      std::memset(&lib, 0, sizeof lib);
      lib.tld_type = OPENDMARC_TLD_TYPE_MOZILLA;
      if (list.size() >= sizeof lib.tld_source_file) throw std::runtime_error("libopendmarc: the public suffix list path is too long");
      std::memcpy(lib.tld_source_file, list.c_str(), list.size() + 1);
      if (int rc = opendmarc_policy_library_init(&lib); rc != DMARC_PARSE_OKAY)
        throw std::runtime_error("libopendmarc: cannot load " + list + ": " + std::strerror(rc));
      list_ = list;
    } else if (list != list_) {
      throw std::runtime_error("libopendmarc keeps one public suffix list per process (" + list_ + "), not " + list);
    }
    ++users_;
  }
  ~OpendmarcLibrary() {
    std::lock_guard lock(mutex_);
    if (--users_ == 0) {
      OPENDMARC_LIB_T lib;
      std::memset(&lib, 0, sizeof lib);
      opendmarc_policy_library_shutdown(&lib);
      list_.clear();
    }
  }
  OpendmarcLibrary(const OpendmarcLibrary&) = delete;
  OpendmarcLibrary& operator=(const OpendmarcLibrary&) = delete;

 private:
  static inline std::mutex mutex_;
  static inline int users_ = 0;
  static inline std::string list_;
};

struct DkimLibClose {
  void operator()(DKIM_LIB* lib) const { dkim_close(lib); }
};

// ---------------------------------------------------------------------------------------------
// Authentication-Results (RFC 8601): a property value as a token / addr-spec when it is one,
// else a quoted-string; a control character becomes '?' (it cannot be quoted).
std::string pvalue(std::string_view v) {
  const bool plain = !v.empty() && std::all_of(v.begin(), v.end(), [](unsigned char c) {
    return std::isalnum(c) || std::string_view("!#$%&'*+-/=?^_`{|}~.@").find(static_cast<char>(c)) != std::string_view::npos;
  });
  if (plain) return std::string(v);
  std::string out = "\"";
  for (unsigned char c : v) {
    if (c < 0x20 || c == 0x7f) c = '?';
    if (c == '"' || c == '\\') out += '\\';
    out += static_cast<char>(c);
  }
  return out + "\"";
}

}  // namespace

// ---------------------------------------------------------------------------------------------

struct Checker::Impl {
  DnsSettings settings;
  dns::Resolver resolver;
  PublicSuffixList psl;
  OpendmarcLibrary opendmarc;
  std::unique_ptr<DKIM_LIB, DkimLibClose> dkim;

  Impl(DnsSettings s, const std::filesystem::path& list)
      : settings(s), resolver(dns::Settings{s.servers, s.timeout, s.attempts, s.cache_entries}), psl(list), opendmarc(list.string()) {
    if (s.check_budget <= std::chrono::milliseconds(0)) throw std::invalid_argument("sender_auth: check_budget must be positive");
    dkim.reset(dkim_init(nullptr, nullptr));
    if (!dkim) throw std::runtime_error("libopendkim: dkim_init failed");
    DKIM_LIB* lib = dkim.get();
    unsigned int flags = DKIM_LIBFLAGS_BADSIGHANDLES;  // keep handles of broken signatures, to report them
    dkim_options(lib, DKIM_OP_SETOPT, DKIM_OPTS_FLAGS, &flags, sizeof flags);
    unsigned int timeout = static_cast<unsigned int>(std::max<long long>(1, (settings.timeout.count() + 999) / 1000));
    dkim_options(lib, DKIM_OP_SETOPT, DKIM_OPTS_TIMEOUT, &timeout, sizeof timeout);
    dkim_set_prescreen(lib, dkim_prescreen);
    dkim_dns_set_init(lib, nullptr);
    dkim_dns_set_close(lib, nullptr);
    dkim_dns_set_query_service(lib, &resolver);
    dkim_dns_set_query_start(lib, dkim_query_start);
    dkim_dns_set_query_waitreply(lib, dkim_query_waitreply);
    dkim_dns_set_query_cancel(lib, dkim_query_cancel);
  }

  std::string org_domain(const std::string& domain) const {
    std::string org = psl.organizational_domain(domain);
    return org.empty() ? domain : org;  // a public suffix is its own organisation
  }

  // RFC 7489 3.1.1 / 3.1.2; both ASCII lower case.
  bool aligned(const std::string& auth_domain, const std::string& from_domain, bool strict) const {
    if (auth_domain.empty() || from_domain.empty()) return false;
    if (auth_domain == from_domain) return true;
    return !strict && org_domain(auth_domain) == org_domain(from_domain);
  }
};

Checker::Checker(DnsSettings dns, std::filesystem::path public_suffix_list)
    : impl_(std::make_unique<Impl>(std::move(dns), public_suffix_list)) {
  static std::once_flag spf_once;
  std::call_once(spf_once, [] {
    // libspf2 writes warnings to stderr; what matters reaches Verdict::notes. Errors (its
    // assertions) keep the default handler, which aborts.
    SPF_warning_handler = spf_log_quiet;
    SPF_info_handler = spf_log_quiet;
    SPF_debug_handler = spf_log_quiet;
  });
}

Checker::~Checker() = default;

std::string Checker::organizational_domain(const std::string& domain) const { return impl_->psl.organizational_domain(domain); }

Verdict Checker::check(const Input& in) const {
  Verdict v;
  const ClientIp ip = parse_ip(in.client_ip);
  const CheckContext ctx{&impl_->resolver, dns::Clock::now() + impl_->settings.check_budget, &v.notes};
  struct Scope {  // the DKIM hooks find the check through this
    explicit Scope(const CheckContext* c) { t_check = c; }
    ~Scope() { t_check = nullptr; }
  } scope(&ctx);

  // SPF: MAIL FROM's domain, or HELO's for the null sender (RFC 7208 2.4).
  const bool null_sender = in.mail_from.empty();
  std::string local = "postmaster", raw_domain = in.helo;
  if (!null_sender) {
    const auto at = in.mail_from.rfind('@');
    local = at == std::string::npos ? "postmaster" : in.mail_from.substr(0, at);
    raw_domain = at == std::string::npos ? in.mail_from : in.mail_from.substr(at + 1);
  }
  v.spf_domain = dns_domain(raw_domain);
  if (v.spf_domain.empty()) {
    v.spf = "none";  // RFC 7208 4.3: not a usable domain
    v.notes.push_back("spf: \"" + raw_domain + "\" is not a domain that can be checked");
  } else {
    v.spf = spf_check(ctx, ip, in.helo, (local.empty() ? "postmaster" : local) + "@" + v.spf_domain, v.spf_domain, in.authserv_id);
  }

  v.dkim = dkim_check(impl_->dkim.get(), in.raw, ctx);

  HeaderFrom hf = parse_header_from(in.raw);
  v.header_from = hf.address;
  v.header_from_domain = hf.domain;
  if (!hf.problem.empty()) v.notes.push_back("from: " + hf.problem);

  // DMARC and alignment.
  const std::string& from = v.header_from_domain;
  if (from.empty()) {
    v.dmarc = "permerror";
  } else {
    DmarcRecord rec = dmarc_lookup(ctx, from);
    const std::string org = impl_->org_domain(from);
    if (rec.state == DmarcRecord::none && org != from) rec = dmarc_lookup(ctx, org);
    DMARC_POLICY_T* pctx = opendmarc_policy_connect_init(reinterpret_cast<u_char*>(const_cast<char*>(ip.text.c_str())), ip.v6 ? 1 : 0);
    if (!pctx) throw std::runtime_error("libopendmarc: cannot create a policy context");
    auto U = [](const std::string& s) { return reinterpret_cast<u_char*>(const_cast<char*>(s.c_str())); };
    opendmarc_policy_store_from_domain(pctx, U(from));
    bool record_ok = false;
    if (rec.state == DmarcRecord::found) {
      const std::string org_arg = rec.domain != from ? rec.domain : std::string();
      int rc = opendmarc_policy_store_dmarc(pctx, U(rec.text), U(from), org_arg.empty() ? nullptr : U(org_arg));
      record_ok = rc == DMARC_PARSE_OKAY;
      if (!record_ok) {
        v.dmarc = "permerror";
        v.notes.push_back("dmarc: the record of " + rec.domain + " does not parse: " + opendmarc_policy_status_to_str(rc));
        opendmarc_policy_connect_rset(pctx);
        opendmarc_policy_store_from_domain(pctx, U(from));
      }
    } else {
      v.dmarc = rec.state == DmarcRecord::temporary ? "temperror" : "none";
    }
    if (!record_ok) {  // no usable record: the library still evaluates, with relaxed defaults
      const std::string relaxed = "v=DMARC1; p=none";
      opendmarc_policy_store_dmarc(pctx, U(relaxed), U(from), nullptr);
    }
    int adkim = 0, aspf = 0;
    opendmarc_policy_fetch_adkim(pctx, &adkim);
    opendmarc_policy_fetch_aspf(pctx, &aspf);

    const int spf_outcome = v.spf == "pass"                          ? DMARC_POLICY_SPF_OUTCOME_PASS
                            : v.spf == "fail" || v.spf == "softfail" ? DMARC_POLICY_SPF_OUTCOME_FAIL
                            : v.spf == "temperror"                   ? DMARC_POLICY_SPF_OUTCOME_TMPFAIL
                                                                     : DMARC_POLICY_SPF_OUTCOME_NONE;
    if (!v.spf_domain.empty())
      opendmarc_policy_store_spf(pctx, U(v.spf_domain), spf_outcome,
                                 null_sender ? DMARC_POLICY_SPF_ORIGIN_HELO : DMARC_POLICY_SPF_ORIGIN_MAILFROM, nullptr);
    v.spf_aligned = v.spf == "pass" && impl_->aligned(v.spf_domain, from, aspf == DMARC_RECORD_A_STRICT);
    for (const auto& sig : v.dkim) {
      const std::string d = dns_domain(sig.domain);
      if (d.empty()) continue;
      const int outcome = sig.result == "pass"        ? DMARC_POLICY_DKIM_OUTCOME_PASS
                          : sig.result == "temperror" ? DMARC_POLICY_DKIM_OUTCOME_TMPFAIL
                          : sig.result == "fail"      ? DMARC_POLICY_DKIM_OUTCOME_FAIL
                                                      : DMARC_POLICY_DKIM_OUTCOME_NONE;
      opendmarc_policy_store_dkim(pctx, U(d), U(sig.selector), outcome, nullptr);
      if (sig.result == "pass" && impl_->aligned(d, from, adkim == DMARC_RECORD_A_STRICT)) v.dkim_aligned = true;
    }
    const int library = opendmarc_get_policy_to_enforce(pctx);
    if (record_ok) {
      const bool pass = v.spf_aligned || v.dkim_aligned;
      v.dmarc = pass ? "pass" : "fail";
      int p = 0, sp = 0;
      opendmarc_policy_fetch_p(pctx, &p);
      opendmarc_policy_fetch_sp(pctx, &sp);
      v.dmarc_policy = dmarc_policy_name(opendmarc_get_policy_token_used(pctx) == DMARC_USED_POLICY_IS_SP ? sp : p);
      if (pass != (library == DMARC_POLICY_PASS))
        v.notes.push_back(std::string("dmarc: libopendmarc says \"") + opendmarc_policy_status_to_str(library) +
                          "\"; alignment under the public suffix list says " + v.dmarc);
    }
    opendmarc_policy_connect_shutdown(pctx);
  }
  v.from_authenticated = !from.empty() && (v.spf_aligned || v.dkim_aligned);

  // Authentication-Results.
  std::string ar = pvalue(in.authserv_id.empty() ? "localhost" : in.authserv_id) + "; spf=" + v.spf;
  if (!null_sender)
    ar += " smtp.mailfrom=" + pvalue(in.mail_from);
  else if (!in.helo.empty())
    ar += " smtp.helo=" + pvalue(in.helo);
  if (v.dkim.empty()) ar += "; dkim=none";
  for (const auto& sig : v.dkim) {
    ar += "; dkim=" + sig.result;
    if (!sig.domain.empty()) ar += " header.d=" + pvalue(sig.domain);
    if (!sig.selector.empty()) ar += " header.s=" + pvalue(sig.selector);
  }
  ar += "; dmarc=" + v.dmarc;
  if (!from.empty()) ar += " header.from=" + from;
  v.authentication_results = std::move(ar);
  for (auto& n : v.notes)  // they quote the message (d=, s=, names): keep them one printable line
    for (auto& c : n)
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  return v;
}

}  // namespace mailgate::auth
