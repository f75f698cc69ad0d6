#include "rules/host_policy.hpp"

#include <arpa/inet.h>

#include <array>
#include <cctype>
#include <cstring>

namespace mailgate {

namespace {

AddressClass classify_v4(const unsigned char a[4]) {
  const unsigned b0 = a[0], b1 = a[1];
  if (b0 == 0 && b1 == 0 && a[2] == 0 && a[3] == 0) return AddressClass::unspecified;
  if (b0 == 169 && b1 == 254) return AddressClass::link_local;
  if (b0 == 100 && b1 == 100 && a[2] == 100 && a[3] == 200) return AddressClass::link_local;  // Alibaba metadata
  if (b0 == 127) return AddressClass::loopback;
  if (b0 == 10 || (b0 == 172 && (b1 & 0xf0) == 16) || (b0 == 192 && b1 == 168) || (b0 == 100 && (b1 & 0xc0) == 64))
    return AddressClass::private_;
  if (b0 == 0) return AddressClass::unspecified;  // "this network"
  if (b0 >= 224 && b0 <= 239) return AddressClass::multicast;
  if (b0 >= 240) return AddressClass::unspecified;  // reserved and broadcast
  return AddressClass::public_;
}

}  // namespace

AddressClass classify_address(std::string_view ip) {
  std::string text(ip);
  unsigned char v4[4];
  if (inet_pton(AF_INET, text.c_str(), v4) == 1) return classify_v4(v4);
  std::array<unsigned char, 16> v6{};
  if (inet_pton(AF_INET6, text.c_str(), v6.data()) != 1) return AddressClass::invalid;
  static const unsigned char mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::memcmp(v6.data(), mapped_prefix, 12) == 0) return classify_v4(v6.data() + 12);
  static const std::array<unsigned char, 16> any{}, loop{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  static const std::array<unsigned char, 16> ec2{0xfd, 0x00, 0x0e, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x54};
  if (v6 == any) return AddressClass::unspecified;
  if (v6 == loop) return AddressClass::loopback;
  if (v6 == ec2) return AddressClass::link_local;
  if (v6[0] == 0xfe && (v6[1] & 0xc0) == 0x80) return AddressClass::link_local;
  if (v6[0] == 0xff) return AddressClass::multicast;
  if ((v6[0] & 0xfe) == 0xfc) return AddressClass::private_;
  return AddressClass::public_;
}

std::optional<std::string> mailbox_host_refusal(const std::vector<std::string>& addresses, bool allow_private) {
  if (addresses.empty()) return "the host does not resolve";
  for (const auto& a : addresses) {
    switch (classify_address(a)) {
      case AddressClass::link_local: return "the host resolves to a link-local or cloud metadata address (" + a + ")";
      case AddressClass::unspecified: return "the host resolves to an unspecified or reserved address (" + a + ")";
      case AddressClass::multicast: return "the host resolves to a multicast address (" + a + ")";
      case AddressClass::invalid: return "the host resolves to something that is not an IP address (" + a + ")";
      case AddressClass::loopback:
        if (!allow_private) return "the host resolves to a loopback address (" + a + "); allowed only with [security] allow_private_hosts";
        break;
      case AddressClass::private_:
        if (!allow_private) return "the host resolves to a private address (" + a + "); allowed only with [security] allow_private_hosts";
        break;
      case AddressClass::public_: break;
    }
  }
  return std::nullopt;
}

std::optional<std::string> hostname_syntax_error(std::string_view host) {
  if (host.empty()) return "the host is empty";
  if (classify_address(host) != AddressClass::invalid) return std::nullopt;  // an IP literal
  if (host.size() > 253) return "the host name is longer than 253 characters";
  std::string_view h = host;
  if (h.back() == '.') h.remove_suffix(1);
  std::size_t start = 0;
  while (start <= h.size()) {
    auto end = h.find('.', start);
    if (end == std::string_view::npos) end = h.size();
    auto label = h.substr(start, end - start);
    if (label.empty() || label.size() > 63) return "the host name has an empty or too long label";
    if (label.front() == '-' || label.back() == '-') return "a host name label may not start or end with '-'";
    for (unsigned char c : label)
      if (!std::isalnum(c) && c != '-') return "the host name contains a character that is not allowed";
    start = end + 1;
  }
  return std::nullopt;
}

}  // namespace mailgate
