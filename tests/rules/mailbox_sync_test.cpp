// rules/mailbox_sync: folder choice, resume point, batches, backoff and health, as tables.
#include <gtest/gtest.h>

#include "rules/mailbox_sync.hpp"

namespace mailgate {
namespace {

using namespace std::chrono_literals;

TEST(ChooseFolder, Table) {
  const std::vector<FolderInfo> dotted = {{"INBOX", ".", true}, {"INBOX.Facturen", ".", false}, {"INBOX.Facturen.2026", ".", false},
                                          {"INBOX.Verzonden items", ".", false}, {"[Gmail]", ".", false, false}};
  const std::vector<FolderInfo> slashed = {{"Inbox", "/", true}, {"Facturen", "/", false}, {"Facturen/2026", "/", false},
                                           {"Entwürfe", "/", false}};
  struct Row {
    const std::vector<FolderInfo>* folders;
    std::string wanted;
    std::optional<std::string> chosen;
  };
  const Row rows[] = {
      {&dotted, "", "INBOX"},
      {&dotted, "inbox", "INBOX"},
      {&slashed, "", "Inbox"},
      {&slashed, "INBOX", "Inbox"},
      {&dotted, "Facturen", "INBOX.Facturen"},
      {&dotted, "Facturen/2026", "INBOX.Facturen.2026"},
      {&dotted, "INBOX/Facturen/2026", "INBOX.Facturen.2026"},
      {&dotted, "INBOX.Verzonden items", "INBOX.Verzonden items"},
      {&slashed, "INBOX.Facturen.2026", "Facturen/2026"},
      {&slashed, "Entwürfe", "Entwürfe"},
      {&slashed, "facturen", std::nullopt},  // only INBOX is case-insensitive
      {&dotted, "[Gmail]", std::nullopt},    // not selectable
      {&dotted, "Archief", std::nullopt},
  };
  for (const auto& r : rows) EXPECT_EQ(choose_folder(*r.folders, r.wanted), r.chosen) << r.wanted;
}

TEST(PlanSync, ResumeOrResync) {
  EXPECT_EQ(plan_sync(std::nullopt, 7).first_uid, 1u);
  EXPECT_FALSE(plan_sync(std::nullopt, 7).resync);
  auto same = plan_sync(SyncCursor{7, 120}, 7);
  EXPECT_FALSE(same.resync);
  EXPECT_EQ(same.first_uid, 121u);
  auto changed = plan_sync(SyncCursor{7, 120}, 8);
  EXPECT_TRUE(changed.resync);
  EXPECT_EQ(changed.first_uid, 1u);
}

TEST(BatchUids, Cuts) {
  std::vector<std::uint32_t> uids;
  for (std::uint32_t i = 1; i <= 250; ++i) uids.push_back(i);
  auto b = batch_uids(uids, 100);
  ASSERT_EQ(b.size(), 3u);
  EXPECT_EQ(b[0].size(), 100u);
  EXPECT_EQ(b[2].size(), 50u);
  EXPECT_EQ(b[2].back(), 250u);
  EXPECT_TRUE(batch_uids({}, 100).empty());
}

TEST(Backoff, FromOneSecondToFiveMinutesWithJitter) {
  EXPECT_EQ(backoff(0, 0.5), 1000ms);
  EXPECT_EQ(backoff(1, 0.5), 2000ms);
  EXPECT_EQ(backoff(5, 0.5), 32000ms);
  EXPECT_EQ(backoff(9, 0.5), 300000ms) << "capped at 5 minutes";
  EXPECT_EQ(backoff(40, 0.5), 300000ms);
  EXPECT_EQ(backoff(3, 0.0), 6000ms) << "-25 %";
  EXPECT_EQ(backoff(3, 0.999999), 9999ms) << "+25 %";
  EXPECT_EQ(backoff(0, 0.0), 1000ms) << "never below 1 s";
  EXPECT_EQ(backoff(20, 1.0), 300000ms) << "never above 5 min";
}

TEST(Health, Table) {
  struct Row {
    bool refused;
    int attempt;
    std::chrono::seconds failing_for;
    Health expected;
  };
  const Row rows[] = {
      {true, 0, 0s, Health::failed},        {false, 0, 0s, Health::retrying},
      {false, 7, 3599s, Health::retrying},  {false, 30, 24h, Health::failed},
      {false, 30, 86399s, Health::retrying},
  };
  for (const auto& r : rows) {
    auto d = on_sync_failure(r.refused, r.attempt, r.failing_for, 24h, 0.5);
    EXPECT_EQ(d.health, r.expected) << r.refused << " " << r.attempt << " " << r.failing_for.count();
    if (d.health == Health::retrying) {
      EXPECT_EQ(d.retry_in, backoff(r.attempt, 0.5));
    }
  }
  EXPECT_EQ(to_string(Health::retrying), "retrying");
}

}  // namespace
}  // namespace mailgate
