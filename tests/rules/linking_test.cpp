// rules/linking: one row per message, with the contacts it links to.
#include <gtest/gtest.h>

#include "rules/linking.hpp"

namespace mailgate {
namespace {

const std::map<std::string, std::set<std::int64_t>> kContacts = {
    {"jan@klant.nl", {1}},
    {"info@bedrijf.nl", {2, 3}},  // one address shared by two contacts
    {"piet@bücher.de", {4}},      // never matches: contact keys are normalised (punycode)
    {"piet@xn--bcher-kva.de", {5}},
    {"support@mail.nieuwsbrief.nl", {6}},
    {"boekhouding@coop.nl", {7}},
};

struct Row {
  const char* name;
  std::vector<std::string> addresses;
  LinkPolicy policy;
  std::set<std::int64_t> expected;
};

class Linking : public ::testing::TestWithParam<Row> {};

TEST_P(Linking, Table) { EXPECT_EQ(link_contacts(GetParam().addresses, GetParam().policy, kContacts), GetParam().expected); }

const LinkPolicy kPlain{"boekhouding@coop.nl", {}, {}};

INSTANTIATE_TEST_SUITE_P(
    Rows, Linking,
    ::testing::Values(
        Row{"one_sender", {"jan@klant.nl"}, kPlain, {1}},
        Row{"case_insensitive", {"JAN@Klant.NL"}, kPlain, {1}},
        Row{"several_contacts", {"jan@klant.nl", "info@bedrijf.nl"}, kPlain, {1, 2, 3}},
        Row{"duplicates_once", {"jan@klant.nl", "Jan@klant.nl", "jan@klant.nl"}, kPlain, {1}},
        Row{"idn_normalised", {"piet@BÜCHER.de"}, kPlain, {5}},
        Row{"own_address_skipped", {"boekhouding@coop.nl", "Boekhouding@COOP.nl"}, kPlain, {}},
        Row{"excluded_address", {"jan@klant.nl", "info@bedrijf.nl"}, LinkPolicy{"x@coop.nl", {"info@bedrijf.nl"}, {}}, {1}},
        Row{"excluded_domain", {"jan@klant.nl"}, LinkPolicy{"x@coop.nl", {}, {"klant.nl"}}, {}},
        Row{"excluded_domain_covers_subdomains", {"support@mail.nieuwsbrief.nl"}, LinkPolicy{"x@coop.nl", {}, {"nieuwsbrief.nl"}}, {}},
        Row{"excluded_subdomain_not_parent", {"jan@klant.nl"}, LinkPolicy{"x@coop.nl", {}, {"mail.klant.nl"}}, {1}},
        Row{"suffix_is_not_a_domain", {"jan@klant.nl"}, LinkPolicy{"x@coop.nl", {}, {"ant.nl"}}, {1}},
        Row{"unknown_address", {"onbekend@elders.nl"}, kPlain, {}},
        Row{"invalid_addresses_ignored", {"", "geen adres", "@klant.nl", "jan@klant.nl"}, kPlain, {1}},
        Row{"no_addresses", {}, kPlain, {}}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(Linking, LinkableAddressesKeepsFirstSeenOrder) {
  EXPECT_EQ(linkable_addresses({"B@x.nl", "a@x.nl", "b@X.nl"}, kPlain), (std::vector<std::string>{"b@x.nl", "a@x.nl"}));
}

}  // namespace
}  // namespace mailgate
