// rules/mailbox_sync: the decisions of a mailbox's sync loop, kept pure so they are table-tested:
// which folder to read, where to resume, how to cut work into batches, how long to wait after a
// failure and what the mailbox's health becomes.
//
// Health (issue 4): "ok"; "retrying" after a transient failure, with exponential backoff from
// 1 s to 5 min and jitter; "failed" when the server refused the credentials, or when failures
// went on longer than the configured number of hours. A failed mailbox stops trying until an
// admin saves it or asks for a reconnect.
#pragma once
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace mailgate {

// --- folder choice ---------------------------------------------------------------------------

struct FolderInfo {
  std::string name;       // UTF-8, as the server lists it ("INBOX.Facturen", "Inbox/Facturen")
  std::string delimiter;  // "." or "/" (empty: flat)
  bool inbox = false;     // the server marked it \Inbox, or it is INBOX itself
  bool selectable = true;
};

// The folder to sync. `wanted` empty means the inbox. Otherwise `wanted` is matched on its path
// components, whatever delimiter the admin typed and with or without an "INBOX" prefix the
// server uses ("Facturen/2026" finds "INBOX.Facturen.2026"). Case-insensitive for INBOX only.
std::optional<std::string> choose_folder(const std::vector<FolderInfo>& folders, const std::string& wanted);

// --- where to resume ---------------------------------------------------------------------------

struct SyncCursor {
  std::uint32_t uidvalidity = 0;
  std::uint32_t last_uid = 0;  // highest UID stored
};

struct SyncStart {
  bool resync = false;        // UIDVALIDITY changed: everything is new to the server's numbering
  std::uint32_t first_uid = 1;
};

SyncStart plan_sync(const std::optional<SyncCursor>& cursor, std::uint32_t uidvalidity);

// Splits UIDs (ascending) into batches of at most `max_count` messages.
// (Sizes are unknown before the FETCH, so a batch is bounded by count; IMAP literals stream.)
std::vector<std::vector<std::uint32_t>> batch_uids(const std::vector<std::uint32_t>& uids, std::size_t max_count);

// --- failures and health -----------------------------------------------------------------------

enum class Health { ok, retrying, failed };
std::string to_string(Health h);

struct FailureDecision {
  Health health;
  std::chrono::milliseconds retry_in{0};  // when retrying
};

// `attempt` counts consecutive failures (0 for the first). `jitter` in [0, 1) spreads retries of
// many mailboxes. `failing_for` is how long the mailbox has been failing without a success.
FailureDecision on_sync_failure(bool credentials_refused, int attempt, std::chrono::seconds failing_for,
                                std::chrono::hours give_up_after, double jitter);

std::chrono::milliseconds backoff(int attempt, double jitter);  // 1 s · 2^attempt, at most 5 min, ±25 %

}  // namespace mailgate
