#include "rules/address.hpp"

#include <idn2.h>

#include <algorithm>
#include <cctype>

namespace mailgate {

std::string trim(std::string_view s) {
  auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v'; };
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return std::string(s);
}

bool has_line_break(std::string_view s) { return s.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos; }

namespace {

std::string lower_ascii(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// RFC 5322 atext plus '.', and any UTF-8 byte (RFC 6531 allows UTF-8 local parts).
bool local_char_ok(unsigned char c) {
  if (c >= 0x80) return true;
  if (std::isalnum(c)) return true;
  return std::string_view("!#$%&'*+-/=?^_`{|}~.").find(static_cast<char>(c)) != std::string_view::npos;
}

}  // namespace

std::variant<std::string, AddressError> normalize_domain(std::string_view input) {
  std::string d = trim(input);
  if (!d.empty() && d.front() == '@') d.erase(0, 1);
  if (d.empty()) return AddressError{"the domain is empty"};
  if (d.back() == '.') d.pop_back();  // a fully qualified name's root dot
  for (unsigned char c : d)
    if (c < 0x21 || c == 0x7f || c == '@' || c == '[' || c == ']') return AddressError{"the domain contains a character that is not allowed"};
  std::string ascii;
  bool non_ascii = std::any_of(d.begin(), d.end(), [](unsigned char c) { return c >= 0x80; });
  if (non_ascii) {
    char* out = nullptr;
    int rc = idn2_to_ascii_8z(d.c_str(), &out, IDN2_NONTRANSITIONAL | IDN2_NFC_INPUT);
    if (rc != IDN2_OK) return AddressError{std::string("the domain is not a valid international name: ") + idn2_strerror(rc)};
    ascii = out;
    idn2_free(out);
  } else {
    ascii = d;
  }
  ascii = lower_ascii(ascii);
  if (ascii.size() > 253) return AddressError{"the domain is longer than 253 characters"};
  std::size_t labels = 0, start = 0;
  while (start <= ascii.size()) {
    auto end = ascii.find('.', start);
    if (end == std::string::npos) end = ascii.size();
    std::string_view label(ascii.data() + start, end - start);
    if (label.empty() || label.size() > 63) return AddressError{"the domain has an empty or too long label"};
    if (label.front() == '-' || label.back() == '-') return AddressError{"a domain label may not start or end with '-'"};
    for (unsigned char c : label)
      if (!std::isalnum(c) && c != '-') return AddressError{"the domain contains a character that is not allowed"};
    ++labels;
    start = end + 1;
  }
  if (labels < 2) return AddressError{"the domain needs at least two labels (example.nl)"};
  const auto tld = ascii.substr(ascii.rfind('.') + 1);
  if (std::all_of(tld.begin(), tld.end(), [](unsigned char c) { return std::isdigit(c); }))
    return AddressError{"the domain is an IP address, not a name"};
  return ascii;
}

std::variant<std::string, AddressError> normalize_email(std::string_view input) {
  const std::string s = trim(input);
  if (s.empty()) return AddressError{"the address is empty"};
  if (has_line_break(s)) return AddressError{"the address contains a line break"};
  const auto at = s.rfind('@');
  if (at == std::string::npos) return AddressError{"the address has no @"};
  const std::string_view local(s.data(), at);
  if (local.empty()) return AddressError{"the part before the @ is empty"};
  if (local.size() > 64) return AddressError{"the part before the @ is longer than 64 characters"};
  if (local.front() == '.' || local.back() == '.' || local.find("..") != std::string_view::npos)
    return AddressError{"the part before the @ has a misplaced dot"};
  for (unsigned char c : local)
    if (!local_char_ok(c)) return AddressError{"the part before the @ contains a character that is not allowed"};
  auto domain = normalize_domain(std::string_view(s).substr(at + 1));
  if (auto* e = std::get_if<AddressError>(&domain)) return *e;
  std::string out = std::string(local) + "@" + std::get<std::string>(domain);
  if (out.size() > 254) return AddressError{"the address is longer than 254 characters"};
  return out;
}

std::string email_match_key(std::string_view normalized) { return lower_ascii(normalized); }

std::string_view email_domain(std::string_view normalized) {
  const auto at = normalized.rfind('@');
  return at == std::string_view::npos ? std::string_view{} : normalized.substr(at + 1);
}

}  // namespace mailgate
