#include "protocol/dns.hpp"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <resolv.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <unordered_map>

namespace mailgate::dns {

const char* to_string(Status status) {
  switch (status) {
    case Status::ok: return "ok";
    case Status::nxdomain: return "nxdomain";
    case Status::temporary: return "temporary";
  }
  return "temporary";
}

namespace {

sockaddr_in parse_server(const std::string& text) {
  std::string host = text;
  int port = 53;
  if (auto colon = text.rfind(':'); colon != std::string::npos) {
    host = text.substr(0, colon);
    const std::string digits = text.substr(colon + 1);
    if (digits.empty() || digits.size() > 5 || !std::all_of(digits.begin(), digits.end(), [](unsigned char c) { return c >= '0' && c <= '9'; }))
      throw std::invalid_argument("dns server \"" + text + "\": the port is not a number");
    port = std::stoi(digits);
    if (port < 1 || port > 65535) throw std::invalid_argument("dns server \"" + text + "\": the port is out of range");
  }
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1)
    throw std::invalid_argument("dns server \"" + text + "\": not an IPv4 address (IPv6 resolvers only through /etc/resolv.conf)");
  return a;
}

// Closes a res_state that res_ninit opened (its sockets, and the resolv.conf reference it holds).
struct ResState {
  struct __res_state st;
  bool open = false;
  ResState() { std::memset(&st, 0, sizeof st); }
  ~ResState() {
    if (open) res_nclose(&st);
  }
  ResState(const ResState&) = delete;
  ResState& operator=(const ResState&) = delete;
};

constexpr unsigned char kOpt[] = {0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0};  // root, OPT, 1232 bytes, no flags

std::string rcode_text(int rcode) {
  switch (rcode) {
    case 1: return "FORMERR";
    case 2: return "SERVFAIL";
    case 4: return "NOTIMP";
    case 5: return "REFUSED";
  }
  return "rcode " + std::to_string(rcode);
}

}  // namespace

struct Resolver::Cache {
  struct Entry {
    Reply reply;
    Clock::time_point expires;
  };
  std::mutex mutex;
  std::unordered_map<std::string, Entry> entries;  // "name/type"
};

Resolver::Resolver(Settings settings) : settings_(std::move(settings)) {
  if (settings_.servers.size() > MAXNS) throw std::invalid_argument("dns: at most " + std::to_string(MAXNS) + " servers");
  if (settings_.timeout <= std::chrono::milliseconds(0)) throw std::invalid_argument("dns: the timeout must be positive");
  if (settings_.attempts < 1 || settings_.attempts > 5) throw std::invalid_argument("dns: attempts must be between 1 and 5");
  for (const auto& s : settings_.servers) servers_.push_back(parse_server(s));
  if (settings_.cache_entries > 0) cache_ = std::make_shared<Cache>();
}

std::optional<std::uint32_t> reply_ttl(const std::vector<unsigned char>& wire) {
  ns_msg msg;
  if (ns_initparse(wire.data(), static_cast<int>(wire.size()), &msg) < 0) return std::nullopt;
  std::optional<std::uint32_t> ttl;
  const int answers = ns_msg_count(msg, ns_s_an);
  for (int i = 0; i < answers; ++i) {
    ns_rr rr;
    if (ns_parserr(&msg, ns_s_an, i, &rr) < 0) return std::nullopt;
    ttl = std::min(ttl.value_or(UINT32_MAX), static_cast<std::uint32_t>(ns_rr_ttl(rr)));
  }
  if (answers > 0) return ttl;
  // Negative (RFC 2308 5): the SOA in the authority section, MINIMUM being its last field.
  const int authority = ns_msg_count(msg, ns_s_ns);
  for (int i = 0; i < authority; ++i) {
    ns_rr rr;
    if (ns_parserr(&msg, ns_s_ns, i, &rr) < 0) return std::nullopt;
    if (ns_rr_type(rr) != ns_t_soa || ns_rr_rdlen(rr) < 4) continue;
    const unsigned char* minimum = ns_rr_rdata(rr) + ns_rr_rdlen(rr) - 4;
    return std::min(static_cast<std::uint32_t>(ns_rr_ttl(rr)), static_cast<std::uint32_t>(ns_get32(minimum)));
  }
  return std::nullopt;
}

Reply Resolver::query_raw(std::string_view name, int rr_type, Clock::time_point deadline) const {
  if (!cache_) return ask(name, rr_type, deadline);
  std::string key;
  key.reserve(name.size() + 6);
  for (char c : name) key.push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c);
  while (!key.empty() && key.back() == '.') key.pop_back();
  key += "/" + std::to_string(rr_type);
  {
    std::lock_guard lock(cache_->mutex);
    if (auto f = cache_->entries.find(key); f != cache_->entries.end()) {
      if (Clock::now() < f->second.expires) return f->second.reply;
      cache_->entries.erase(f);
    }
  }
  Reply r = ask(name, rr_type, deadline);
  if (r.status == Status::temporary || r.wire.empty()) return r;
  const auto ttl = reply_ttl(r.wire);
  if (!ttl || *ttl == 0) return r;
  const auto keep = std::min<std::chrono::seconds>(std::chrono::seconds(*ttl), settings_.cache_max_ttl);
  const auto now = Clock::now();
  std::lock_guard lock(cache_->mutex);
  auto& entries = cache_->entries;
  if (entries.size() >= settings_.cache_entries) {
    std::erase_if(entries, [&](const auto& e) { return e.second.expires <= now; });
    while (entries.size() >= settings_.cache_entries) entries.erase(entries.begin());
  }
  entries[key] = Cache::Entry{r, now + keep};
  return r;
}

Reply Resolver::ask(std::string_view name, int rr_type, Clock::time_point deadline) const {
  Reply r;
  const auto now = Clock::now();
  if (now >= deadline) {
    r.error = "the time for this check is spent";
    return r;
  }
  ResState rs;
  if (res_ninit(&rs.st) != 0) {
    r.error = "res_ninit failed";
    return r;
  }
  rs.open = true;
  auto wait = std::min<Clock::duration>(settings_.timeout, deadline - now);
  rs.st.retrans = std::max(1, static_cast<int>((std::chrono::duration_cast<std::chrono::milliseconds>(wait).count() + 999) / 1000));
  rs.st.retry = settings_.attempts;
  if (!servers_.empty()) {
    // res_ninit filled the list from /etc/resolv.conf; IPv6 entries live in _ext.nsaddrs, which
    // res_nsend prefers, so they go too (res_nclose frees what is left there).
    for (int i = 0; i < MAXNS; ++i) {
      std::free(rs.st._u._ext.nsaddrs[i]);
      rs.st._u._ext.nsaddrs[i] = nullptr;
    }
    rs.st.nscount = static_cast<int>(servers_.size());
    for (std::size_t i = 0; i < servers_.size(); ++i) rs.st.nsaddr_list[i] = servers_[i];
  }

  const std::string qname(name);
  unsigned char q[HFIXEDSZ + NS_MAXCDNAME + QFIXEDSZ + sizeof kOpt];
  int qlen = res_nmkquery(&rs.st, ns_o_query, qname.c_str(), ns_c_in, rr_type, nullptr, 0, nullptr, q, sizeof q - sizeof kOpt);
  if (qlen < 0) {
    r.status = Status::nxdomain;
    r.error = "not a valid DNS name";
    return r;
  }
  const int plain_len = qlen;
  std::memcpy(q + qlen, kOpt, sizeof kOpt);
  qlen += sizeof kOpt;
  q[11] = 1;  // ARCOUNT: the OPT record

  r.wire.assign(65536, 0);
  int n = res_nsend(&rs.st, q, qlen, r.wire.data(), static_cast<int>(r.wire.size()));
  if (n >= HFIXEDSZ && (r.wire[3] & 0x0f) == ns_r_formerr) {
    q[11] = 0;  // a server that does not speak EDNS0: ask again without it
    n = res_nsend(&rs.st, q, plain_len, r.wire.data(), static_cast<int>(r.wire.size()));
  }
  if (n < HFIXEDSZ) {
    const int err = errno;
    std::string where = servers_.empty() ? std::string("the system's resolvers") : std::string();
    for (const auto& s : settings_.servers) where += (where.empty() ? "" : ",") + s;
    // res_nsend gives up with -1 when every server answered SERVFAIL, NOTIMP or REFUSED; the last
    // such reply is still in the buffer (same id, QR set), and says more than "timed out".
    if (r.wire[0] == q[0] && r.wire[1] == q[1] && (r.wire[2] & 0x80) != 0 && (r.wire[3] & 0x0f) != ns_r_noerror) {
      r.rcode = r.wire[3] & 0x0f;
      r.error = rcode_text(r.rcode) + " from " + where;
    } else {
      r.error = "no reply from " + where + " (" + (err == ETIMEDOUT || err == 0 ? std::string("timed out") : std::string(std::strerror(err))) + ")";
    }
    r.wire.clear();
    return r;
  }
  r.wire.resize(static_cast<std::size_t>(n));
  r.rcode = r.wire[3] & 0x0f;
  if (r.rcode == ns_r_noerror) {
    r.status = Status::ok;
  } else if (r.rcode == ns_r_nxdomain) {
    r.status = Status::nxdomain;
    r.error = "NXDOMAIN";
  } else {
    r.error = rcode_text(r.rcode);
  }
  return r;
}

bool decode_answer(const std::vector<unsigned char>& wire, int rr_type, std::vector<std::string>& records) {
  ns_msg msg;
  if (ns_initparse(wire.data(), static_cast<int>(wire.size()), &msg) < 0) return false;
  const int count = ns_msg_count(msg, ns_s_an);
  for (int i = 0; i < count; ++i) {
    ns_rr rr;
    if (ns_parserr(&msg, ns_s_an, i, &rr) < 0) return false;
    if (ns_rr_type(rr) != rr_type || ns_rr_class(rr) != ns_c_in) continue;
    const unsigned char* rd = ns_rr_rdata(rr);
    const std::size_t len = ns_rr_rdlen(rr);
    char name[NS_MAXDNAME];
    switch (rr_type) {
      case type::txt: {
        std::string text;
        for (std::size_t p = 0; p < len;) {
          const std::size_t n = rd[p];
          if (p + 1 + n > len) return false;
          text.append(reinterpret_cast<const char*>(rd + p + 1), n);
          p += 1 + n;
        }
        records.push_back(std::move(text));
        break;
      }
      case type::a:
      case type::aaaa:
        if (len != (rr_type == type::a ? 4u : 16u)) return false;
        records.emplace_back(reinterpret_cast<const char*>(rd), len);
        break;
      case type::mx:
        if (len < 3 || ns_name_uncompress(ns_msg_base(msg), ns_msg_end(msg), rd + 2, name, sizeof name) < 0) return false;
        records.emplace_back(name);
        break;
      case type::ptr:
      case type::cname:
      case type::ns:
        if (ns_name_uncompress(ns_msg_base(msg), ns_msg_end(msg), rd, name, sizeof name) < 0) return false;
        records.emplace_back(name);
        break;
      default:
        records.emplace_back(reinterpret_cast<const char*>(rd), len);
    }
  }
  return true;
}

Answer Resolver::query(std::string_view name, int rr_type, Clock::time_point deadline) const {
  Reply reply = query_raw(name, rr_type, deadline);
  Answer a;
  a.status = reply.status;
  a.error = std::move(reply.error);
  if (a.status != Status::ok) return a;
  if (!decode_answer(reply.wire, rr_type, a.records)) {
    a.records.clear();
    a.status = Status::temporary;
    a.error = "the reply does not parse";
  }
  return a;
}

}  // namespace mailgate::dns
