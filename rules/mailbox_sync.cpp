#include "rules/mailbox_sync.hpp"

#include <algorithm>
#include <cctype>

namespace mailgate {

namespace {
std::string upper(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::vector<std::string> components(const std::string& path, const std::string& delimiters) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : path) {
    if (delimiters.find(c) != std::string::npos) {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur.push_back(c);
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

bool is_inbox_word(const std::string& s) { return upper(s) == "INBOX"; }
}  // namespace

std::optional<std::string> choose_folder(const std::vector<FolderInfo>& folders, const std::string& wanted) {
  std::vector<std::string> want = components(wanted, "/.\\");
  if (!want.empty() && is_inbox_word(want.front()) && want.size() > 1) want.erase(want.begin());
  if (want.empty() || (want.size() == 1 && is_inbox_word(want[0]))) {
    for (const auto& f : folders)
      if (f.selectable && (f.inbox || is_inbox_word(f.name))) return f.name;
    return std::nullopt;
  }
  // Exact name first, then the same path components under any delimiter or INBOX prefix.
  for (const auto& f : folders)
    if (f.selectable && f.name == wanted) return f.name;
  for (const auto& f : folders) {
    if (!f.selectable) continue;
    auto have = components(f.name, f.delimiter.empty() ? std::string("/") : f.delimiter);
    if (have.size() > 1 && is_inbox_word(have.front())) have.erase(have.begin());
    if (have == want) return f.name;
  }
  return std::nullopt;
}

SyncStart plan_sync(const std::optional<SyncCursor>& cursor, std::uint32_t uidvalidity) {
  if (!cursor) return {false, 1};
  if (cursor->uidvalidity != uidvalidity) return {true, 1};
  return {false, cursor->last_uid + 1};
}

std::vector<std::vector<std::uint32_t>> batch_uids(const std::vector<std::uint32_t>& uids, std::size_t max_count) {
  std::vector<std::vector<std::uint32_t>> out;
  for (std::size_t i = 0; i < uids.size(); i += max_count)
    out.emplace_back(uids.begin() + static_cast<std::ptrdiff_t>(i), uids.begin() + static_cast<std::ptrdiff_t>(std::min(uids.size(), i + max_count)));
  return out;
}

std::string to_string(Health h) {
  switch (h) {
    case Health::ok: return "ok";
    case Health::retrying: return "retrying";
    case Health::failed: return "failed";
  }
  return "ok";
}

std::chrono::milliseconds backoff(int attempt, double jitter) {
  const double base_ms = 1000.0 * static_cast<double>(1ull << std::clamp(attempt, 0, 20));
  const double capped = std::min(base_ms, 300000.0);
  const double spread = capped * (0.75 + 0.5 * std::clamp(jitter, 0.0, 1.0));  // ±25 %
  return std::chrono::milliseconds(static_cast<long long>(std::clamp(spread, 1000.0, 300000.0)));
}

FailureDecision on_sync_failure(bool credentials_refused, int attempt, std::chrono::seconds failing_for,
                                std::chrono::hours give_up_after, double jitter) {
  if (credentials_refused) return {Health::failed, {}};
  if (failing_for >= give_up_after) return {Health::failed, {}};
  return {Health::retrying, backoff(attempt, jitter)};
}

}  // namespace mailgate
