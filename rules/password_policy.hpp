// rules/password_policy: what a user's password must be. At least 8 characters (Unicode code
// points), at most 1024 bytes, with at least one digit, one lower-case and one upper-case letter.
// Letters are judged in ASCII and in the Latin-1 Supplement (é, Ö, ...) so that a Dutch password
// is judged as its owner expects.
#pragma once
#include <optional>
#include <string>
#include <string_view>

namespace mailgate {

// Null when acceptable, else the reason in words a user understands.
std::optional<std::string> password_policy_violation(std::string_view password);

}  // namespace mailgate
