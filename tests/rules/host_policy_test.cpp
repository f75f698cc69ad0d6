// rules/host_policy: one row per address, with its class and both verdicts.
#include <gtest/gtest.h>

#include "rules/host_policy.hpp"

namespace mailgate {
namespace {

struct Row {
  const char* ip;
  AddressClass cls;
  bool refused_strict;   // allow_private = false
  bool refused_lenient;  // allow_private = true
};

class HostPolicy : public ::testing::TestWithParam<Row> {};

TEST_P(HostPolicy, Table) {
  const Row& r = GetParam();
  EXPECT_EQ(classify_address(r.ip), r.cls) << r.ip;
  EXPECT_EQ(mailbox_host_refusal({r.ip}, false).has_value(), r.refused_strict) << r.ip;
  EXPECT_EQ(mailbox_host_refusal({r.ip}, true).has_value(), r.refused_lenient) << r.ip;
}

using C = AddressClass;
INSTANTIATE_TEST_SUITE_P(
    Rows, HostPolicy,
    ::testing::Values(Row{"8.8.8.8", C::public_, false, false}, Row{"2a00:1450:4001::1", C::public_, false, false},
                      Row{"127.0.0.1", C::loopback, true, false}, Row{"127.8.9.10", C::loopback, true, false},
                      Row{"::1", C::loopback, true, false}, Row{"10.1.2.3", C::private_, true, false},
                      Row{"172.16.0.1", C::private_, true, false}, Row{"172.31.255.255", C::private_, true, false},
                      Row{"172.32.0.1", C::public_, false, false}, Row{"192.168.1.1", C::private_, true, false},
                      Row{"100.64.0.1", C::private_, true, false}, Row{"fd12::1", C::private_, true, false},
                      Row{"169.254.169.254", C::link_local, true, true}, Row{"169.254.0.1", C::link_local, true, true},
                      Row{"100.100.100.200", C::link_local, true, true}, Row{"fe80::1", C::link_local, true, true},
                      Row{"fd00:ec2::254", C::link_local, true, true}, Row{"::ffff:169.254.169.254", C::link_local, true, true},
                      Row{"::ffff:127.0.0.1", C::loopback, true, false}, Row{"0.0.0.0", C::unspecified, true, true},
                      Row{"::", C::unspecified, true, true}, Row{"224.0.0.1", C::multicast, true, true},
                      Row{"ff02::1", C::multicast, true, true}, Row{"255.255.255.255", C::unspecified, true, true}));

TEST(HostPolicy, OneBadAddressRefusesTheHost) {
  EXPECT_TRUE(mailbox_host_refusal({"8.8.8.8", "169.254.169.254"}, true));
  EXPECT_EQ(*mailbox_host_refusal({}, true), "the host does not resolve");
}

TEST(HostPolicy, HostnameSyntax) {
  for (const char* ok : {"imap.example.nl", "mail-1.example.co.uk", "localhost", "127.0.0.1", "::1", "example.nl."})
    EXPECT_FALSE(hostname_syntax_error(ok)) << ok;
  for (const char* bad : {"", "exa mple.nl", "-imap.example.nl", "imap..example.nl", "imap_x.example.nl", "imap.example.nl/x",
                          "user@imap.example.nl"})
    EXPECT_TRUE(hostname_syntax_error(bad)) << bad;
}

}  // namespace
}  // namespace mailgate
