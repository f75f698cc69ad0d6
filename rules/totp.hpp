// rules/totp: RFC 6238 time-based one-time passwords (HMAC-SHA1, 6 digits, 30-second steps),
// as authenticator apps expect. Pure: the time is a parameter.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace mailgate {

std::string totp_code(std::string_view secret_raw, std::int64_t unix_time);

// Accepts the code of the current step or of `window_steps` steps either side (clock drift).
// Compares in constant time. `matched_step` receives the step that matched, so that the caller
// can refuse a second use of the same step.
bool totp_verify(std::string_view secret_raw, std::string_view code, std::int64_t unix_time, int window_steps = 1,
                 std::int64_t* matched_step = nullptr);

// otpauth://totp/ISSUER:ACCOUNT?secret=BASE32&issuer=ISSUER&algorithm=SHA1&digits=6&period=30
std::string totp_provisioning_uri(std::string_view issuer, std::string_view account, std::string_view secret_raw);

}  // namespace mailgate
