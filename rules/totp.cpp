#include "rules/totp.hpp"

#include <cctype>
#include <cstdio>

#include "util/crypto.hpp"

namespace mailgate {

namespace {
constexpr std::int64_t kStep = 30;

std::string code_for_step(std::string_view secret, std::int64_t step) {
  unsigned char counter[8];
  for (int i = 7; i >= 0; --i) {
    counter[i] = static_cast<unsigned char>(step & 0xff);
    step >>= 8;
  }
  const std::string mac = hmac_sha1(secret, std::string_view(reinterpret_cast<char*>(counter), 8));
  const int offset = mac[19] & 0x0f;
  const std::uint32_t binary = (static_cast<std::uint32_t>(mac[offset] & 0x7f) << 24) |
                               (static_cast<std::uint32_t>(static_cast<unsigned char>(mac[offset + 1])) << 16) |
                               (static_cast<std::uint32_t>(static_cast<unsigned char>(mac[offset + 2])) << 8) |
                               static_cast<std::uint32_t>(static_cast<unsigned char>(mac[offset + 3]));
  char out[8];
  std::snprintf(out, sizeof out, "%06u", binary % 1000000u);
  return out;
}

std::string percent_encode(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~' || c == '@') {
      out.push_back(static_cast<char>(c));
    } else {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", c);
      out += buf;
    }
  }
  return out;
}
}  // namespace

std::string totp_code(std::string_view secret_raw, std::int64_t unix_time) {
  return code_for_step(secret_raw, unix_time / kStep);
}

bool totp_verify(std::string_view secret_raw, std::string_view code, std::int64_t unix_time, int window_steps,
                 std::int64_t* matched_step) {
  if (code.size() != 6 || code.find_first_not_of("0123456789") != std::string_view::npos) return false;
  const std::int64_t now = unix_time / kStep;
  bool ok = false;
  for (std::int64_t step = now - window_steps; step <= now + window_steps; ++step) {
    // Every candidate is computed and compared, so timing does not tell which step matched.
    if (constant_time_equal(code_for_step(secret_raw, step), code) && !ok) {
      ok = true;
      if (matched_step) *matched_step = step;
    }
  }
  return ok;
}

std::string totp_provisioning_uri(std::string_view issuer, std::string_view account, std::string_view secret_raw) {
  return "otpauth://totp/" + percent_encode(issuer) + ":" + percent_encode(account) + "?secret=" + base32_encode(secret_raw) +
         "&issuer=" + percent_encode(issuer) + "&algorithm=SHA1&digits=6&period=30";
}

}  // namespace mailgate
