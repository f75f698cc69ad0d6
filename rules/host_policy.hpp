// rules/host_policy: which mail server hosts a mailbox may point at. Pure: resolving the name is
// the caller's job; this judges the addresses it resolved to.
//
// Always refused: link-local and cloud metadata addresses (169.254.0.0/16, fe80::/10,
// 100.100.100.200, fd00:ec2::254), unspecified (0.0.0.0, ::) and multicast — a mailbox must never
// become a way to probe the server's own surroundings. Refused unless the operator allows it
// ([security] allow_private_hosts): loopback (127/8, ::1) and private ranges (10/8, 172.16/12,
// 192.168/16, 100.64/10, fc00::/7). An IPv4-mapped IPv6 address is judged as its IPv4 address.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mailgate {

enum class AddressClass { public_, loopback, private_, link_local, unspecified, multicast, invalid };

AddressClass classify_address(std::string_view ip);

// Why a host resolving to `addresses` must be refused, or nullopt when it may be used.
std::optional<std::string> mailbox_host_refusal(const std::vector<std::string>& addresses, bool allow_private);

// Syntax of a host name or IP literal as typed (already trimmed; IDN already converted).
std::optional<std::string> hostname_syntax_error(std::string_view host);

}  // namespace mailgate
