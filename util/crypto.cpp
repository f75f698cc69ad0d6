#include "util/crypto.hpp"

#include <argon2.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace mailgate {

namespace {
const unsigned char* u(std::string_view s) { return reinterpret_cast<const unsigned char*>(s.data()); }

std::string hmac(const EVP_MD* md, std::string_view key, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!HMAC(md, key.data(), static_cast<int>(key.size()), u(data), data.size(), out, &len))
    throw std::runtime_error("HMAC failed");
  return std::string(reinterpret_cast<char*>(out), len);
}
}  // namespace

std::string sha256(std::string_view data) {
  unsigned char out[32];
  unsigned int len = 0;
  if (!EVP_Digest(data.data(), data.size(), out, &len, EVP_sha256(), nullptr)) throw std::runtime_error("SHA-256 failed");
  return std::string(reinterpret_cast<char*>(out), len);
}

std::string sha256_hex(std::string_view data) { return hex_encode(sha256(data)); }
std::string hmac_sha256(std::string_view key, std::string_view data) { return hmac(EVP_sha256(), key, data); }
std::string hmac_sha1(std::string_view key, std::string_view data) { return hmac(EVP_sha1(), key, data); }

std::string hex_encode(std::string_view bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(digits[c >> 4]);
    out.push_back(digits[c & 15]);
  }
  return out;
}

std::string hex_decode(std::string_view hex) {
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    throw std::invalid_argument("not a hexadecimal digit");
  };
  if (hex.size() % 2) throw std::invalid_argument("odd number of hexadecimal digits");
  std::string out(hex.size() / 2, '\0');
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<char>(nibble(hex[2 * i]) << 4 | nibble(hex[2 * i + 1]));
  return out;
}

std::string base64_encode(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3), '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), u(bytes), static_cast<int>(bytes.size()));
  out.resize(n);
  return out;
}

std::string base64_decode(std::string_view text) {
  if (text.size() % 4) throw std::invalid_argument("base64 length is not a multiple of 4");
  std::string out(3 * text.size() / 4, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()), u(text), static_cast<int>(text.size()));
  if (n < 0) throw std::invalid_argument("not base64");
  std::size_t pad = 0;
  if (!text.empty() && text.back() == '=') ++pad;
  if (text.size() > 1 && text[text.size() - 2] == '=') ++pad;
  out.resize(n - pad);
  return out;
}

std::string base32_encode(std::string_view bytes) {
  static const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  std::string out;
  unsigned buffer = 0;
  int bits = 0;
  for (unsigned char c : bytes) {
    buffer = (buffer << 8) | c;
    bits += 8;
    while (bits >= 5) {
      out.push_back(alphabet[(buffer >> (bits - 5)) & 31]);
      bits -= 5;
    }
  }
  if (bits > 0) out.push_back(alphabet[(buffer << (5 - bits)) & 31]);
  return out;
}

std::string base32_decode(std::string_view text) {
  std::string out;
  unsigned buffer = 0;
  int bits = 0;
  for (char c : text) {
    int v;
    if (c >= 'A' && c <= 'Z') v = c - 'A';
    else if (c >= 'a' && c <= 'z') v = c - 'a';
    else if (c >= '2' && c <= '7') v = c - '2' + 26;
    else if (c == '=' || c == ' ') continue;
    else throw std::invalid_argument("not base32");
    buffer = (buffer << 5) | static_cast<unsigned>(v);
    bits += 5;
    if (bits >= 8) {
      out.push_back(static_cast<char>((buffer >> (bits - 8)) & 0xff));
      bits -= 8;
    }
  }
  return out;
}

std::string random_bytes(std::size_t n) {
  std::string out(n, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1)
    throw std::runtime_error("the random number generator failed");
  return out;
}

std::string random_token(std::size_t bytes) {
  std::string t = base64_encode(random_bytes(bytes));
  for (char& c : t) c = c == '+' ? '-' : c == '/' ? '_' : c;
  while (!t.empty() && t.back() == '=') t.pop_back();
  return t;
}

bool constant_time_equal(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

// OWASP's argon2id baseline: 19 MiB, 2 passes, 1 lane.
namespace {
constexpr uint32_t kArgonT = 2, kArgonM = 19 * 1024, kArgonP = 1;
constexpr std::size_t kSaltLen = 16, kHashLen = 32;
}  // namespace

std::string password_hash(std::string_view password) {
  const std::string salt = random_bytes(kSaltLen);
  const std::size_t len = argon2_encodedlen(kArgonT, kArgonM, kArgonP, kSaltLen, kHashLen, Argon2_id);
  std::string encoded(len, '\0');
  int rc = argon2id_hash_encoded(kArgonT, kArgonM, kArgonP, password.data(), password.size(), salt.data(),
                                 salt.size(), kHashLen, encoded.data(), encoded.size());
  if (rc != ARGON2_OK) throw std::runtime_error(std::string("argon2id failed: ") + argon2_error_message(rc));
  encoded.resize(encoded.find('\0'));
  return encoded;
}

bool password_verify(std::string_view password, const std::string& encoded) {
  if (encoded.rfind("$argon2id$", 0) != 0) return false;
  return argon2id_verify(encoded.c_str(), password.data(), password.size()) == ARGON2_OK;
}

SecretBox::SecretBox(std::string_view key) {
  if (key.size() != kKeySize) throw std::invalid_argument("the secrets key must be 32 bytes");
  std::copy(key.begin(), key.end(), key_.begin());
}

SecretBox SecretBox::from_file(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw std::invalid_argument("cannot read the secrets key file " + file.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  std::string key = ss.str();
  if (key.size() != kKeySize) {
    auto b = key.find_first_not_of(" \t\r\n"), e = key.find_last_not_of(" \t\r\n");
    std::string trimmed = b == std::string::npos ? "" : key.substr(b, e - b + 1);
    if (trimmed.size() != 2 * kKeySize)
      throw std::invalid_argument("the secrets key file " + file.string() +
                                  " must hold 32 raw bytes or 64 hexadecimal characters");
    key = hex_decode(trimmed);
  }
  return SecretBox(key);
}

namespace {
constexpr std::string_view kVersion = "v1";
constexpr std::size_t kNonce = 12, kTag = 16;
struct CtxFree {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};
}  // namespace

std::string SecretBox::seal(std::string_view plaintext) const {
  const std::string nonce = random_bytes(kNonce);
  std::unique_ptr<EVP_CIPHER_CTX, CtxFree> ctx(EVP_CIPHER_CTX_new());
  std::string out(kVersion);
  out += nonce;
  std::string body(plaintext.size(), '\0');
  int len = 0;
  unsigned char tag[kTag];
  if (!ctx || EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key_.data(), u(nonce)) != 1 ||
      EVP_EncryptUpdate(ctx.get(), reinterpret_cast<unsigned char*>(body.data()), &len, u(plaintext),
                        static_cast<int>(plaintext.size())) != 1 ||
      EVP_EncryptFinal_ex(ctx.get(), nullptr, &len) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kTag, tag) != 1)
    throw std::runtime_error("AES-256-GCM encryption failed");
  out += body;
  out.append(reinterpret_cast<char*>(tag), kTag);
  return out;
}

std::string SecretBox::open(std::string_view sealed) const {
  if (sealed.size() < kVersion.size() + kNonce + kTag || sealed.substr(0, kVersion.size()) != kVersion)
    throw std::runtime_error("sealed secret is malformed");
  const auto nonce = sealed.substr(kVersion.size(), kNonce);
  const auto body = sealed.substr(kVersion.size() + kNonce, sealed.size() - kVersion.size() - kNonce - kTag);
  std::string tag(sealed.substr(sealed.size() - kTag));
  std::unique_ptr<EVP_CIPHER_CTX, CtxFree> ctx(EVP_CIPHER_CTX_new());
  std::string out(body.size(), '\0');
  int len = 0;
  if (!ctx || EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key_.data(), u(nonce)) != 1 ||
      EVP_DecryptUpdate(ctx.get(), reinterpret_cast<unsigned char*>(out.data()), &len, u(body),
                        static_cast<int>(body.size())) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kTag, tag.data()) != 1 ||
      EVP_DecryptFinal_ex(ctx.get(), nullptr, &len) != 1)
    throw std::runtime_error("sealed secret failed authentication (wrong key or damaged data)");
  return out;
}

}  // namespace mailgate
