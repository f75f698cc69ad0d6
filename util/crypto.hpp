// util/crypto: the few cryptographic primitives mailgate needs, on OpenSSL 3 and libargon2.
//
// - sha256 / hmac_sha256: digests for deduplication, token hashing and webhook signatures.
// - random_bytes / random_token: CSPRNG output (RAND_bytes); throws if the CSPRNG fails.
// - password_hash / password_verify: argon2id in PHC string form ($argon2id$v=19$m=...).
// - SecretBox: AES-256-GCM for secrets at rest; a fresh 12-byte nonce per seal, the 16-byte tag
//   checked on open. Layout: "v1" | nonce | ciphertext | tag. A wrong key or a changed byte makes
//   open() throw; it never returns garbage.
#pragma once
#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace mailgate {

std::string sha256(std::string_view data);  // 32 raw bytes
std::string sha256_hex(std::string_view data);
std::string hmac_sha256(std::string_view key, std::string_view data);  // 32 raw bytes
std::string hmac_sha1(std::string_view key, std::string_view data);    // 20 raw bytes (TOTP)

std::string hex_encode(std::string_view bytes);
std::string hex_decode(std::string_view hex);  // throws std::invalid_argument
std::string base64_encode(std::string_view bytes);
std::string base64_decode(std::string_view text);  // throws std::invalid_argument
std::string base32_encode(std::string_view bytes);  // RFC 4648, no padding (TOTP secrets)
std::string base32_decode(std::string_view text);  // throws std::invalid_argument

std::string random_bytes(std::size_t n);
// URL-safe random token of `bytes` bytes of entropy (base64url, no padding).
std::string random_token(std::size_t bytes = 32);

bool constant_time_equal(std::string_view a, std::string_view b);

std::string password_hash(std::string_view password);
bool password_verify(std::string_view password, const std::string& encoded);

class SecretBox {
 public:
  static constexpr std::size_t kKeySize = 32;
  explicit SecretBox(std::string_view key);  // 32 raw bytes; throws std::invalid_argument
  // Reads a key file: 32 raw bytes, or 64 hex characters (surrounding whitespace ignored).
  static SecretBox from_file(const std::filesystem::path& file);

  std::string seal(std::string_view plaintext) const;
  std::string open(std::string_view sealed) const;  // throws std::runtime_error

 private:
  std::array<unsigned char, kKeySize> key_{};
};

}  // namespace mailgate
