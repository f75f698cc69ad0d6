// rules/totp: RFC 6238 Appendix B (SHA-1) vectors, drift window, refusals.
#include <gtest/gtest.h>

#include "rules/totp.hpp"

namespace mailgate {
namespace {

const std::string kSecret = "12345678901234567890";  // the RFC's SHA-1 seed

struct Vector {
  std::int64_t time;
  const char* code;  // the last 6 digits of the RFC's 8-digit value
};

class TotpVectors : public ::testing::TestWithParam<Vector> {};

TEST_P(TotpVectors, Rfc6238AppendixB) {
  EXPECT_EQ(totp_code(kSecret, GetParam().time), GetParam().code);
  std::int64_t step = -1;
  EXPECT_TRUE(totp_verify(kSecret, GetParam().code, GetParam().time, 0, &step));
  EXPECT_EQ(step, GetParam().time / 30);
}

INSTANTIATE_TEST_SUITE_P(Rfc, TotpVectors,
                         ::testing::Values(Vector{59, "287082"}, Vector{1111111109, "081804"}, Vector{1111111111, "050471"},
                                           Vector{1234567890, "005924"}, Vector{2000000000, "279037"},
                                           Vector{20000000000, "353130"}));

TEST(Totp, AcceptsOneStepOfDriftEitherSide) {
  const std::int64_t t = 1234567890;
  const std::string previous = totp_code(kSecret, t - 30), next = totp_code(kSecret, t + 30);
  EXPECT_TRUE(totp_verify(kSecret, previous, t));
  EXPECT_TRUE(totp_verify(kSecret, next, t));
  EXPECT_FALSE(totp_verify(kSecret, totp_code(kSecret, t - 90), t));
  EXPECT_FALSE(totp_verify(kSecret, previous, t, 0));
}

TEST(Totp, RefusesMalformedCodes) {
  const std::int64_t t = 1234567890;
  for (const char* code : {"", "00592", "0059240", "00592x", " 005924", "-05924"}) EXPECT_FALSE(totp_verify(kSecret, code, t)) << code;
  EXPECT_FALSE(totp_verify("another secret", "005924", t));
}

TEST(Totp, ProvisioningUri) {
  EXPECT_EQ(totp_provisioning_uri("mailgate", "jan de vries@example.nl", "foobar"),
            "otpauth://totp/mailgate:jan%20de%20vries@example.nl?secret=MZXW6YTBOI&issuer=mailgate&algorithm=SHA1&digits=6&period=30");
}

}  // namespace
}  // namespace mailgate
