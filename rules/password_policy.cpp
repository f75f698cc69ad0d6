#include "rules/password_policy.hpp"

namespace mailgate {

namespace {
// Decodes one UTF-8 code point; returns 0xFFFD and advances one byte on malformed input.
char32_t next_code_point(std::string_view s, std::size_t& i) {
  unsigned char c = static_cast<unsigned char>(s[i]);
  int extra = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : -1;
  if (extra < 0 || i + extra >= s.size() + (extra == 0 ? 1 : 0)) {
    ++i;
    return 0xFFFD;
  }
  char32_t cp = extra == 0 ? c : c & (0x3F >> extra);
  for (int k = 1; k <= extra; ++k) {
    unsigned char d = static_cast<unsigned char>(s[i + k]);
    if ((d >> 6) != 2) {
      ++i;
      return 0xFFFD;
    }
    cp = (cp << 6) | (d & 0x3F);
  }
  i += extra + 1;
  return cp;
}

bool is_upper(char32_t c) {
  return (c >= 'A' && c <= 'Z') || (c >= 0xC0 && c <= 0xDE && c != 0xD7);
}
bool is_lower(char32_t c) {
  return (c >= 'a' && c <= 'z') || (c >= 0xDF && c <= 0xFF && c != 0xF7);
}
}  // namespace

std::optional<std::string> password_policy_violation(std::string_view password) {
  if (password.size() > 1024) return "the password is longer than 1024 bytes";
  std::size_t count = 0;
  bool digit = false, lower = false, upper = false;
  for (std::size_t i = 0; i < password.size();) {
    char32_t c = next_code_point(password, i);
    ++count;
    digit |= c >= '0' && c <= '9';
    lower |= is_lower(c);
    upper |= is_upper(c);
  }
  if (count < 8) return "the password must be at least 8 characters long";
  if (!digit) return "the password must contain a digit";
  if (!lower) return "the password must contain a lower-case letter";
  if (!upper) return "the password must contain an upper-case letter";
  return std::nullopt;
}

}  // namespace mailgate
