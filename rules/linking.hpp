// rules/linking: which CRM contacts a message belongs to. Pure, table-tested.
//
// The addresses of From, To, Cc and Reply-To are matched case-insensitively (on their match
// key, rules/address.hpp) against contact addresses. Skipped: the mailbox's own address, the
// mailbox's excluded addresses, and addresses in its excluded domains (a domain also excludes
// its subdomains: excluding example.nl excludes mail.example.nl). A message may link to several
// contacts, each once; a message without a match stays unlinked (and listable).
#pragma once
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace mailgate {

struct LinkPolicy {
  std::string own_address;              // the mailbox's address
  std::set<std::string> excluded_addresses;  // match keys
  std::set<std::string> excluded_domains;    // normalised domains
};

// The match keys of `addresses` (as found in the headers, any case, possibly invalid) that may be
// linked under `policy`, without duplicates, in first-seen order. Invalid addresses are dropped.
std::vector<std::string> linkable_addresses(const std::vector<std::string>& addresses, const LinkPolicy& policy);

// The contacts to link: `contacts_by_address` maps a match key to the contacts having it.
std::set<std::int64_t> link_contacts(const std::vector<std::string>& addresses, const LinkPolicy& policy,
                                     const std::map<std::string, std::set<std::int64_t>>& contacts_by_address);

}  // namespace mailgate
