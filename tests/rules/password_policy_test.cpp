// rules/password_policy: one row per password, with the verdict.
#include <gtest/gtest.h>

#include "rules/password_policy.hpp"

namespace mailgate {
namespace {

struct Row {
  std::string password;
  const char* violation;  // nullptr: accepted
};

class PasswordPolicy : public ::testing::TestWithParam<Row> {};

TEST_P(PasswordPolicy, Table) {
  auto v = password_policy_violation(GetParam().password);
  if (GetParam().violation)
    EXPECT_EQ(v.value_or("(accepted)"), GetParam().violation) << GetParam().password;
  else
    EXPECT_FALSE(v) << GetParam().password << ": " << *v;
}

INSTANTIATE_TEST_SUITE_P(
    Rows, PasswordPolicy,
    ::testing::Values(Row{"Abcdefg1", nullptr}, Row{"Quite \"long\" p\\ssw0rd", nullptr},
                      Row{"wachtwoorD 9 met spaties", nullptr}, Row{"ÉCOLE-école-1", nullptr},
                      Row{"Abcdef1", "the password must be at least 8 characters long"},
                      Row{"Ébcdéf1", "the password must be at least 8 characters long"},
                      Row{"abcdefgh1", "the password must contain an upper-case letter"},
                      Row{"ABCDEFGH1", "the password must contain a lower-case letter"},
                      Row{"Abcdefghi", "the password must contain a digit"},
                      Row{"", "the password must be at least 8 characters long"},
                      Row{"ÀÉÎÕÜ123", "the password must contain a lower-case letter"},
                      Row{"àéîõü123", "the password must contain an upper-case letter"},
                      Row{"Aa1" + std::string(1022, 'x'), "the password is longer than 1024 bytes"}));

}  // namespace
}  // namespace mailgate
