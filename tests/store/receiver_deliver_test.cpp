// store/receivers: a batch of deliveries (receiver_deliver_batch, the group commit's fast path)
// ends exactly as the same deliveries one by one (receiver_deliver) in one transaction: the same
// answers, the same rows, the same TLS latch, rejections and notifications.
#include <gtest/gtest.h>

#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "protocol/mime.hpp"
#include "store/receivers.hpp"
#include "tests/support/pg_harness.hpp"

namespace mailgate {
namespace {

// Two administrations, each with an active receiver; one inactive receiver.
struct World {
  std::int64_t plain = 0;     // whitelist domain leverancier.nl, members notified
  std::int64_t other = 0;     // whitelist address boekhouding@groothandel.nl
  std::int64_t inactive = 0;  // status inactive
};

World make_world(pqxx::connection& conn) {
  pqxx::work tx(conn);
  tx.exec("INSERT INTO mailboxes (display_name, address, is_primary) VALUES ('Info', 'info@coop.nl', true)");
  const auto coop = tx.exec1("INSERT INTO administrations (name) VALUES ('Coop') RETURNING id")[0].as<std::int64_t>();
  const auto winkel = tx.exec1("INSERT INTO administrations (name) VALUES ('Winkel') RETURNING id")[0].as<std::int64_t>();
  const auto ans = tx.exec1("INSERT INTO users (email) VALUES ('ans@coop.nl') RETURNING id")[0].as<std::int64_t>();
  const auto bob = tx.exec1("INSERT INTO users (email) VALUES ('bob@coop.nl') RETURNING id")[0].as<std::int64_t>();
  tx.exec_params("INSERT INTO administration_members VALUES ($1, $2), ($1, $3)", coop, ans, bob);
  auto receiver = [&](std::int64_t administration, const std::string& address, const std::string& status, bool notify) {
    return tx
        .exec_params1("INSERT INTO receivers (administration_id, document_type, address, status, contact_email, notify_members) "
                      "VALUES ($1, 'purchase_invoice', $2, $3, 'facturen@leverancier.nl', $4) RETURNING id",
                      administration, address, status, notify)[0]
        .as<std::int64_t>();
  };
  World w;
  w.plain = receiver(coop, "coop-a1b2c3d4e5@ontvang.test", "active", true);
  w.other = receiver(winkel, "winkel-f6g7h8i9j0@ontvang.test", "active", false);
  w.inactive = receiver(coop, "coop-oud0000000@ontvang.test", "inactive", false);
  tx.exec_params("INSERT INTO receiver_whitelist (receiver_id, kind, value) VALUES ($1, 'domain', 'leverancier.nl'), "
                 "($2, 'address', 'boekhouding@groothandel.nl'), ($3, 'domain', 'leverancier.nl')",
                 w.plain, w.other, w.inactive);
  tx.commit();
  return w;
}

Delivery delivery(std::int64_t receiver, const std::string& id, const std::string& from, bool tls, bool pdf = true) {
  Delivery d;
  d.receiver_id = receiver;
  d.queue_id = id;
  d.raw = "From: " + from + "\r\nTo: x@ontvang.test\r\nSubject: factuur " + id +
          "\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nzie bijlage\r\n"
          "--b\r\nContent-Type: " + std::string(pdf ? "application/pdf" : "image/png") +
          "\r\nContent-Disposition: attachment; filename=\"f\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b--\r\n";
  std::vector<std::optional<ContentSpan>> spans;
  d.parsed = parse_message(d.raw, spans);
  d.envelope_from = from;
  d.peer_address = "127.0.0.1";
  d.tls = tls;
  d.facts.header_from = from;
  d.facts.from_authenticated = true;
  d.facts.tls = tls;
  d.facts.size = d.raw.size();
  for (const auto& a : d.parsed.attachments) d.facts.attachments.push_back({a.content_type, a.filename});
  d.auth_json = "{}";
  return d;
}

// What a run left behind, to compare the two ways.
struct Outcome {
  std::string answer;  // per delivery: code, gone, message stored, rejection, notifications
  std::string state;   // the rows
  bool operator==(const Outcome&) const = default;
};

std::string describe(const DeliveryOutcome& o) {
  return std::to_string(o.verdict.code) + (o.receiver_gone ? " gone" : "") + (o.message_id ? " stored" : "") +
         (o.rejection_queued ? " rejection" : "") + (o.rejection_skipped.empty() ? "" : " skipped:" + o.rejection_skipped) +
         " notifications:" + std::to_string(o.notifications_queued) + (o.verdict.latch_tls ? " latch" : "") + " | " + o.verdict.reason;
}

Outcome run(bool as_batch, const std::vector<Delivery>& (*make)(const World&)) {
  pqxx::connection conn{test::fresh_migrated_database()};
  const World w = make_world(conn);
  const auto& deliveries = make(w);
  std::vector<DeliveryOutcome> outcomes;
  {
    pqxx::work tx(conn);
    if (as_batch) {
      std::vector<const Delivery*> batch;
      for (const auto& d : deliveries) batch.push_back(&d);
      outcomes = receiver_deliver_batch(tx, batch, 10);
    } else {
      for (const auto& d : deliveries) outcomes.push_back(receiver_deliver(tx, d, 10));
    }
    tx.commit();
  }
  Outcome out;
  for (std::size_t i = 0; i < outcomes.size(); ++i) out.answer += deliveries[i].queue_id + ": " + describe(outcomes[i]) + "\n";
  pqxx::work tx(conn);
  for (const auto& r : tx.exec("SELECT source_key, receiver_id, subject, transport_tls FROM messages ORDER BY source_key"))
    out.state += "message " + r[0].as<std::string>() + " receiver " + r[1].as<std::string>() + " '" + r[2].as<std::string>() + "' tls " +
                 r[3].as<std::string>() + "\n";
  for (const auto& r : tx.exec("SELECT kind, cause_id, count(*) FROM outbox GROUP BY 1, 2 ORDER BY 1, 2"))
    out.state += "outbox " + r[0].as<std::string>() + " " + r[1].as<std::string>() + " x" + r[2].as<std::string>() + "\n";
  for (const auto& r : tx.exec("SELECT id, require_tls FROM receivers ORDER BY id"))
    out.state += "receiver " + r[0].as<std::string>() + " require_tls " + r[1].as<std::string>() + "\n";
  out.state += "audit " + tx.exec1("SELECT count(*) FROM audit_log WHERE entity = 'receiver'")[0].as<std::string>() + "\n";
  return out;
}

const std::vector<Delivery>& mixed(const World& w) {
  static std::vector<Delivery> list;
  list = {
      delivery(w.plain, "q01", "jan@leverancier.nl", false),               // accepted, 2 notifications
      delivery(w.other, "q02", "boekhouding@groothandel.nl", true),        // accepted, latches TLS
      delivery(w.other, "q03", "boekhouding@groothandel.nl", false),       // refused: TLS now required
      delivery(w.plain, "q04", "onbekend@elders.nl", false),               // not whitelisted
      delivery(w.plain, "q05", "jan@leverancier.nl", false, false),        // no PDF: rejection mail
      delivery(w.inactive, "q06", "jan@leverancier.nl", false),            // inactive: unknown
      delivery(w.other, "q07", "boekhouding@groothandel.nl", true),        // accepted, no second latch
      delivery(w.plain, "q08", "piet@leverancier.nl", true),               // accepted, latches TLS
      delivery(w.plain, "q09", "jan@leverancier.nl", false),               // refused: TLS now required
  };
  return list;
}

TEST(ReceiverDeliverBatch, EndsAsTheSameDeliveriesOneByOne) {
  const Outcome batch = run(true, mixed), one_by_one = run(false, mixed);
  EXPECT_EQ(batch.answer, one_by_one.answer);
  EXPECT_EQ(batch.state, one_by_one.state);

  // And what that is, so that both cannot be wrong the same way.
  std::map<std::string, std::string> answers;
  std::istringstream lines(batch.answer);
  for (std::string line; std::getline(lines, line);) answers[line.substr(0, 3)] = line.substr(5);
  EXPECT_EQ(answers["q01"], "250 stored notifications:2 | message accepted");
  EXPECT_NE(answers["q02"].find("250 stored notifications:0 latch"), std::string::npos) << answers["q02"];
  EXPECT_NE(answers["q03"].find("550 rejection notifications:0 | this address accepts mail only over TLS"), std::string::npos) << answers["q03"];
  EXPECT_NE(answers["q04"].find("550 notifications:0 | the sender onbekend@elders.nl may not send"), std::string::npos) << answers["q04"];
  EXPECT_NE(answers["q05"].find("rejection"), std::string::npos) << answers["q05"];
  EXPECT_NE(answers["q06"].find("550 gone"), std::string::npos) << answers["q06"];
  EXPECT_NE(answers["q07"].find("250 stored notifications:0 |"), std::string::npos) << answers["q07"];
  EXPECT_NE(answers["q08"].find("250 stored notifications:2 latch"), std::string::npos) << answers["q08"];
  EXPECT_NE(answers["q09"].find("only over TLS"), std::string::npos) << answers["q09"];
  EXPECT_NE(batch.state.find("outbox receiver_notification"), std::string::npos) << batch.state;
  EXPECT_NE(batch.state.find("audit 2"), std::string::npos) << batch.state;
}

TEST(ReceiverDeliverBatch, ADeliveryTheDatabaseRefusesFailsTheWholeBatch) {
  // The group commit relies on this: any error throws, and it starts again one by one.
  pqxx::connection conn{test::fresh_migrated_database()};
  const World w = make_world(conn);
  {
    pqxx::work tx(conn);
    tx.exec("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.subject LIKE '%q02%' THEN RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$");
    tx.exec("CREATE TRIGGER refuse BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION refuse()");
    tx.commit();
  }
  const std::vector<Delivery> list = {delivery(w.plain, "q01", "jan@leverancier.nl", false),
                                      delivery(w.plain, "q02", "jan@leverancier.nl", false)};
  pqxx::work tx(conn);
  EXPECT_THROW(receiver_deliver_batch(tx, {&list[0], &list[1]}, 10), pqxx::sql_error);
}

}  // namespace
}  // namespace mailgate
