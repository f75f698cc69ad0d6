// rules/address: e-mail address and host syntax, and the normal form used to store and match
// addresses. Pure functions; failures come back as a reason, never as an exception.
//
// Normal form: surrounding whitespace trimmed, the domain converted from Unicode to its ASCII
// (punycode, IDNA 2008 via libidn2) form and lower-cased; the local part is kept as written.
// match_key() lower-cases the whole address: addresses are matched case-insensitively.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace mailgate {

struct AddressError {
  std::string reason;  // "has no @", "the domain is not valid", ...
};

// Returns the normal form of `input`, or why it is not a usable mailbox address.
std::variant<std::string, AddressError> normalize_email(std::string_view input);

// Lower-cased normal form, for comparisons and unique keys. Input must be normalised.
std::string email_match_key(std::string_view normalized);

// The domain of a normalised address (after the last @).
std::string_view email_domain(std::string_view normalized);

// Normalises a bare domain (as typed for an excluded domain or a whitelist entry; a leading "@"
// is dropped). Returns the ASCII lower-case form or why it is not valid.
std::variant<std::string, AddressError> normalize_domain(std::string_view input);

// Trims ASCII whitespace at both ends.
std::string trim(std::string_view s);

// True if `s` contains CR or LF (or NUL): such a value must never reach a mail header.
bool has_line_break(std::string_view s);

}  // namespace mailgate
