// Logging: spdlog to stderr, key=value messages. Under systemd (JOURNAL_STREAM set) lines carry
// no timestamp of their own but a "<N>" syslog priority prefix that journald turns into the
// entry's priority; elsewhere they carry an ISO-8601 UTC timestamp and the level.
#pragma once
#include <string>

namespace mailgate {

void logging_setup(const std::string& level);

}  // namespace mailgate
