#include <gtest/gtest.h>

#include "util/crypto.hpp"

namespace mailgate {
namespace {

TEST(Crypto, Sha256KnownVector) {
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Crypto, HmacSha256Rfc4231Case2) {
  EXPECT_EQ(hex_encode(hmac_sha256("Jefe", "what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(Crypto, Base64RoundTripsEveryLength) {
  std::string data;
  for (int i = 0; i < 40; ++i) {
    EXPECT_EQ(base64_decode(base64_encode(data)), data) << i;
    data.push_back(static_cast<char>(i * 37));
  }
  EXPECT_EQ(base64_encode("foobar"), "Zm9vYmFy");
  EXPECT_THROW(base64_decode("abc"), std::invalid_argument);
  EXPECT_THROW(base64_decode("ab!="), std::invalid_argument);
}

TEST(Crypto, Base32Rfc4648Vectors) {
  EXPECT_EQ(base32_encode("foobar"), "MZXW6YTBOI");
  EXPECT_EQ(base32_decode("MZXW6YTBOI"), "foobar");
  EXPECT_EQ(base32_decode("mzxw6ytboi======"), "foobar");
  EXPECT_THROW(base32_decode("MZ1W"), std::invalid_argument);
}

TEST(Crypto, HexDecodeRefusesJunk) {
  EXPECT_EQ(hex_decode("00ff10"), std::string("\x00\xff\x10", 3));
  EXPECT_THROW(hex_decode("0"), std::invalid_argument);
  EXPECT_THROW(hex_decode("zz"), std::invalid_argument);
}

TEST(Crypto, RandomTokensDiffer) {
  auto a = random_token(), b = random_token();
  EXPECT_NE(a, b);
  EXPECT_EQ(a.size(), 43u);
  EXPECT_EQ(a.find_first_of("+/="), std::string::npos);
}

TEST(Crypto, PasswordHashIsArgon2idAndVerifies) {
  auto h = password_hash("Correct horse 1");
  EXPECT_EQ(h.rfind("$argon2id$v=19$", 0), 0u) << h;
  EXPECT_TRUE(password_verify("Correct horse 1", h));
  EXPECT_FALSE(password_verify("Correct horse 2", h));
  EXPECT_NE(password_hash("Correct horse 1"), h) << "salt must differ";
  EXPECT_FALSE(password_verify("x", "plaintext"));
}

TEST(SecretBox, SealOpenRoundTrip) {
  SecretBox box(random_bytes(32));
  for (std::string secret : {std::string(), std::string("hunter2"), std::string(1000, 'x')}) {
    auto sealed = box.seal(secret);
    EXPECT_EQ(sealed.find(secret.empty() ? "\x01\x02\x03" : secret), std::string::npos);
    EXPECT_EQ(box.open(sealed), secret);
  }
}

TEST(SecretBox, FreshNoncePerSeal) {
  SecretBox box(random_bytes(32));
  EXPECT_NE(box.seal("same"), box.seal("same"));
}

TEST(SecretBox, WrongKeyOrTamperingIsRefused) {
  SecretBox box(random_bytes(32)), other(random_bytes(32));
  auto sealed = box.seal("mailbox password");
  EXPECT_THROW(other.open(sealed), std::runtime_error);
  for (std::size_t i = 0; i < sealed.size(); ++i) {
    auto bad = sealed;
    bad[i] = static_cast<char>(bad[i] ^ 1);
    EXPECT_THROW(box.open(bad), std::runtime_error) << "byte " << i;
  }
  EXPECT_THROW(box.open("v1short"), std::runtime_error);
  EXPECT_THROW(SecretBox("short"), std::invalid_argument);
}

}  // namespace
}  // namespace mailgate
