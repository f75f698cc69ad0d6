// protocol/dns: a small blocking DNS stub resolver on glibc's libresolv, for the sender
// authentication libraries (protocol/sender_auth), which need answers to a few TXT, A, AAAA, MX
// and PTR questions per message and have synchronous DNS hooks.
//
// Contract: a Resolver asks the servers of its Settings -- IPv4 "host[:port]", so a test can run
// its own server on 127.0.0.1 with a random port -- or, with none configured, the system's
// resolvers from /etc/resolv.conf. Each question gets a fresh private res_state (res_ninit, the
// server list replaced, res_nsend, res_nclose), so one Resolver may be used from any number of
// threads at once. Questions carry an EDNS0 OPT (1232-byte UDP payload); a truncated UDP reply is
// asked again over TCP by libresolv.
//
// Failure: every outcome of a question is a value. ok means the server answered NOERROR (the
// record list may be empty: the name has no data of that type); nxdomain means the name does not
// exist (or cannot exist: it is not a valid DNS name); everything else -- timeout, unreachable
// server, SERVFAIL or any other rcode, a reply that does not parse, the caller's deadline passed --
// is temporary, with the reason in `error`. Malformed Settings throw std::invalid_argument from
// the constructor.
//
// Cache: with Settings.cache_entries, a question asked again within the TTL of its answer is
// answered from memory (names compared without case and trailing dot), also after `deadline`;
// one cache per Resolver, shared by its copies and safe from any number of threads.
//
// Timing: libresolv counts its timeout in whole seconds, so `timeout` is rounded up (at least 1 s);
// one question waits about `timeout` per server per attempt in the worst case.
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <netinet/in.h>

namespace mailgate::dns {

struct Settings {
  // "127.0.0.1:5353" or "10.0.0.1" (port 53). At most 3 (libresolv's MAXNS), IPv4 only (an IPv6
  // resolver can be used through /etc/resolv.conf). Empty: the system's resolvers.
  std::vector<std::string> servers;
  std::chrono::milliseconds timeout{5000};  // per server and attempt
  int attempts = 2;                         // 1..5
  // Answers kept for their TTL, at most this many (0: none kept): the smallest TTL of the answer
  // records, or for a negative answer (NXDOMAIN, or no records of the type) the smaller of the
  // authority SOA's TTL and its MINIMUM (RFC 2308); without an SOA, or with a TTL of 0, nothing is
  // kept. Never longer than cache_max_ttl. Temporary failures are never kept.
  std::size_t cache_entries = 0;
  std::chrono::seconds cache_max_ttl{3600};
};

enum class Status { ok, nxdomain, temporary };
const char* to_string(Status status);

// Record types asked for by the sender authentication code (values of RFC 1035 / IANA).
namespace type {
inline constexpr int a = 1, ns = 2, cname = 5, ptr = 12, mx = 15, txt = 16, aaaa = 28;
}

struct Reply {
  Status status = Status::temporary;
  int rcode = -1;                   // of the reply; -1 when none arrived
  std::vector<unsigned char> wire;  // the reply message as received (empty when none arrived)
  std::string error;                // why the status is not ok
};

struct Answer {
  Status status = Status::temporary;
  // The records of the asked type, in reply order (records of other types, such as the CNAMEs a
  // recursive server adds, are skipped). TXT: the record's character-strings joined without
  // separator (RFC 7208 3.3, RFC 6376 3.6.2.2). A / AAAA: the 4 / 16 address bytes. MX: the
  // exchange's name (the preference is dropped). PTR, CNAME, NS: the name. Names have no trailing
  // dot.
  std::vector<std::string> records;
  std::string error;
};

using Clock = std::chrono::steady_clock;

class Resolver {
 public:
  explicit Resolver(Settings settings);

  // One question (class IN) and its raw reply. After `deadline` no question is sent any more:
  // the reply is temporary at once.
  Reply query_raw(std::string_view name, int rr_type, Clock::time_point deadline = Clock::time_point::max()) const;
  // The same question, its records decoded.
  Answer query(std::string_view name, int rr_type, Clock::time_point deadline = Clock::time_point::max()) const;

  const Settings& settings() const { return settings_; }

 private:
  Reply ask(std::string_view name, int rr_type, Clock::time_point deadline) const;

  struct Cache;
  Settings settings_;
  std::vector<sockaddr_in> servers_;  // empty: keep what res_ninit read from /etc/resolv.conf
  std::shared_ptr<Cache> cache_;      // null: nothing kept
};

// How long a reply may be kept (see Settings::cache_entries), before the cap; nullopt: not at all.
std::optional<std::uint32_t> reply_ttl(const std::vector<unsigned char>& wire);

// Decodes the records of `rr_type` in the answer section of a reply (see Answer::records);
// false if the message does not parse.
bool decode_answer(const std::vector<unsigned char>& wire, int rr_type, std::vector<std::string>& records);

}  // namespace mailgate::dns
