// protocol/mailgun_webhook: the signature (a vector computed with Python's hmac), the time
// window, and the rebuilt message read back by protocol/mime.
#include <gtest/gtest.h>

#include "protocol/mailgun_webhook.hpp"
#include "protocol/mime.hpp"

namespace mailgate::mailgun {
namespace {

const std::string kKey = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0";
const std::string kTimestamp = "1770920772";
const std::string kToken = "e0b5477167110d68991efc6b9f89f0a11066af27834600e123";
// python3 -c "import hmac,hashlib; print(hmac.new(KEY, TIMESTAMP + TOKEN, hashlib.sha256).hexdigest())"
const std::string kSignature = "3f9f9869e390626cfa401e164e5cd201b24d153eafc2004a69d41c945dc93c1e";

TEST(MailgunWebhook, SignatureAsMailgunDocumentsIt) {
  EXPECT_EQ(sign(kKey, kTimestamp, kToken), kSignature);
  EXPECT_TRUE(signature_valid(kKey, kTimestamp, kToken, kSignature));
  std::string upper = kSignature;
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_TRUE(signature_valid(kKey, kTimestamp, kToken, upper));

  std::string first = kSignature, last = kSignature;
  first[0] = first[0] == '0' ? '1' : '0';
  last.back() = last.back() == '0' ? '1' : '0';
  EXPECT_FALSE(signature_valid(kKey, kTimestamp, kToken, first));
  EXPECT_FALSE(signature_valid(kKey, kTimestamp, kToken, last));
  EXPECT_FALSE(signature_valid(kKey, kTimestamp, kToken, kSignature.substr(0, 63)));
  EXPECT_FALSE(signature_valid(kKey, kTimestamp, kToken, kSignature + "0"));
  EXPECT_FALSE(signature_valid(kKey, kTimestamp, kToken, ""));
  EXPECT_FALSE(signature_valid("other-key", kTimestamp, kToken, kSignature));
  EXPECT_FALSE(signature_valid(kKey, "1770920773", kToken, kSignature));
  EXPECT_FALSE(signature_valid(kKey, kTimestamp, kToken + "x", kSignature));
  // timestamp + token is what is signed, not the pair: moving a character across is not the same.
  EXPECT_TRUE(signature_valid(kKey, kTimestamp + "e", kToken.substr(1), kSignature)) << "Mailgun's scheme has no separator";
}

TEST(MailgunWebhook, TimestampWindow) {
  const std::int64_t now = 1'800'000'000;
  const std::chrono::seconds window(30600);
  EXPECT_EQ(check_timestamp("1800000000", now, window), TimestampCheck::ok);
  EXPECT_EQ(check_timestamp(std::to_string(now - 2 * 3600), now, window), TimestampCheck::ok);
  EXPECT_EQ(check_timestamp(std::to_string(now - 30600), now, window), TimestampCheck::ok);
  EXPECT_EQ(check_timestamp(std::to_string(now - 30601), now, window), TimestampCheck::out_of_window);
  EXPECT_EQ(check_timestamp(std::to_string(now - 9 * 3600), now, window), TimestampCheck::out_of_window);
  EXPECT_EQ(check_timestamp(std::to_string(now + 9 * 3600), now, window), TimestampCheck::out_of_window);
  for (const char* bad : {"", "-5", "1.5", " 1800000000", "18000000000000", "0x10", "1800000000\n"})
    EXPECT_EQ(check_timestamp(bad, now, window), TimestampCheck::malformed) << bad;
}

TEST(MailgunWebhook, RebuiltMessageParsesToTheFields) {
  RebuildInput in;
  in.headers = {{"Received", "from a by b; Mon, 30 Nov 2026 10:00:01 +0000"},
                {"From", "\"Piet\" <piet@leverancier.test>"},
                {"To", "info@coop.test"},
                {"Subject", "=?UTF-8?Q?Factuur_=E2=82=AC?="},
                {"Date", "Mon, 30 Nov 2026 10:00:00 +0100"},
                {"Message-Id", "<m1@leverancier.test>"},
                {"Mime-Version", "1.0"},
                {"Content-Type", "multipart/mixed; boundary=\"gone\""},
                {"X-Injected", "a\r\nBcc: evil@example.test"},
                {"X-Folded", "a\r\n b"}};
  in.text_body = "Beste Coop,\r\n\r\nregel \xe2\x82\xac\r\n";
  in.html_body = "<p>Beste Coop</p>";
  in.attachments.push_back({"factuur.pdf", "application/pdf", std::string("%PDF\0\xff", 6), ""});
  in.attachments.push_back({"\xc3\xa9\xc3\xa9n \"x\".csv", "text/csv", "a;b\r\n", ""});
  in.attachments.push_back({"logo.png", "image/png", "PNG", "logo@coop"});
  const std::string raw = rebuild_message(in);
  EXPECT_EQ(rebuild_message(in), raw) << "the same fields give the same bytes";
  EXPECT_EQ(raw.find("boundary=\"gone\""), std::string::npos);
  EXPECT_EQ(raw.find("\r\nBcc:"), std::string::npos) << raw;
  EXPECT_NE(raw.find("X-Folded: a\r\n b\r\n"), std::string::npos);

  const auto p = parse_message(raw);
  EXPECT_TRUE(p.warnings.empty()) << p.warnings.front();
  EXPECT_EQ(p.subject, "Factuur \xe2\x82\xac");
  ASSERT_EQ(p.from.size(), 1u);
  EXPECT_EQ(p.from[0].address, "piet@leverancier.test");
  EXPECT_EQ(p.message_id, "m1@leverancier.test");
  ASSERT_TRUE(p.date);
  EXPECT_EQ(*p.date, 1'796'029'200);
  EXPECT_EQ(p.text_body, *in.text_body);
  EXPECT_EQ(p.html_body, *in.html_body);
  ASSERT_EQ(p.attachments.size(), 3u);
  EXPECT_EQ(p.attachments[0].filename, "factuur.pdf");
  EXPECT_EQ(p.attachments[0].content_type, "application/pdf");
  EXPECT_EQ(p.attachments[0].data, in.attachments[0].data);
  EXPECT_EQ(p.attachments[1].filename, in.attachments[1].filename);
  EXPECT_EQ(p.attachments[1].data, "a;b\r\n");
  EXPECT_EQ(p.attachments[2].content_id, "logo@coop");
  EXPECT_TRUE(p.attachments[2].inline_part);

  RebuildInput text_only;
  text_only.headers = {{"Subject", "kort"}};
  text_only.text_body = "alleen tekst";
  const auto q = parse_message(rebuild_message(text_only));
  EXPECT_EQ(q.text_body, "alleen tekst");
  EXPECT_TRUE(q.attachments.empty());
}

}  // namespace
}  // namespace mailgate::mailgun
