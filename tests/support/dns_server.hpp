// A private DNS server for tests: tests/support/dns_server.py (on Debian's python3-dnslib) on
// 127.0.0.1 with a free port, UDP and TCP, answering from a zone this object writes to a temporary
// file. set_zone() replaces the zone while it runs (the server rereads the file when it changes).
// Every question it received is in queries(). The destructor stops it and removes its files.
#pragma once
#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace mailgate::test {

struct DnsRecord {
  std::string name;                // "example.test"
  std::string type;                // TXT A AAAA MX PTR CNAME NS
  std::vector<std::string> data;   // TXT: its strings (longer than 255 bytes: split); MX: "10 mx.example.test"; else one value
};

struct DnsZone {
  std::vector<DnsRecord> records;
  std::vector<std::string> servfail;  // names answered with SERVFAIL
  std::vector<std::string> drop;      // names never answered
  int ttl = 0;                        // of every record (0: not to be cached)
  int negative_ttl = 0;               // > 0: negative answers carry an SOA with it (RFC 2308)
};

class DnsServer {
 public:
  explicit DnsServer(const DnsZone& zone = {});
  ~DnsServer();
  DnsServer(const DnsServer&) = delete;
  DnsServer& operator=(const DnsServer&) = delete;

  std::uint16_t port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  void set_zone(const DnsZone& zone);
  // "udp example.test TXT", in order of arrival.
  std::vector<std::string> queries() const;
  void clear_queries();

 private:
  std::filesystem::path dir_;
  std::uint16_t port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace mailgate::test
