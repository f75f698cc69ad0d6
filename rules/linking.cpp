#include "rules/linking.hpp"

#include <algorithm>
#include <variant>

#include "rules/address.hpp"

namespace mailgate {

namespace {
bool in_excluded_domain(std::string_view domain, const std::set<std::string>& excluded) {
  for (;;) {
    if (excluded.count(std::string(domain))) return true;
    auto dot = domain.find('.');
    if (dot == std::string_view::npos) return false;
    domain.remove_prefix(dot + 1);
  }
}
}  // namespace

std::vector<std::string> linkable_addresses(const std::vector<std::string>& addresses, const LinkPolicy& policy) {
  std::string own;
  if (auto n = normalize_email(policy.own_address); std::holds_alternative<std::string>(n)) own = email_match_key(std::get<std::string>(n));
  std::vector<std::string> out;
  for (const auto& a : addresses) {
    auto n = normalize_email(a);
    if (!std::holds_alternative<std::string>(n)) continue;
    const std::string key = email_match_key(std::get<std::string>(n));
    if (key == own || policy.excluded_addresses.count(key) || in_excluded_domain(email_domain(key), policy.excluded_domains)) continue;
    if (std::find(out.begin(), out.end(), key) == out.end()) out.push_back(key);
  }
  return out;
}

std::set<std::int64_t> link_contacts(const std::vector<std::string>& addresses, const LinkPolicy& policy,
                                     const std::map<std::string, std::set<std::int64_t>>& contacts_by_address) {
  std::set<std::int64_t> out;
  for (const auto& key : linkable_addresses(addresses, policy))
    if (auto it = contacts_by_address.find(key); it != contacts_by_address.end()) out.insert(it->second.begin(), it->second.end());
  return out;
}

}  // namespace mailgate
