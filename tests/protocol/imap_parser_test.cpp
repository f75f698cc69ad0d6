// protocol/imap_parser: server responses fed whole, split at every byte boundary and byte by
// byte must give the same events; a table of invalid input gives an error each.
#include <gtest/gtest.h>

#include "protocol/imap_parser.hpp"

namespace mailgate::imap {
namespace {

std::string render(const Value& v) {
  switch (v.kind) {
    case Value::Kind::atom: return v.text;
    case Value::Kind::number: return "#" + std::to_string(v.number);
    case Value::Kind::string: return "\"" + v.text + "\"";
    case Value::Kind::nil: return "NIL";
    case Value::Kind::literal: return "{lit" + std::to_string(v.literal_seq) + ":" + std::to_string(v.literal_size) + "}";
    case Value::Kind::list: {
      std::string s = "(";
      for (const auto& i : v.items) s += (s.size() > 1 ? " " : "") + render(i);
      return s + ")";
    }
  }
  return "?";
}

std::string render(const Response& r) {
  std::string s = r.type == Response::Type::continuation ? "+" : r.type == Response::Type::tagged ? "T:" + r.tag : "*";
  if (!r.status.empty()) s += " " + r.status;
  if (!r.code.empty()) {
    s += " [";
    for (std::size_t i = 0; i < r.code.size(); ++i) s += (i ? " " : "") + render(r.code[i]);
    s += "]";
  }
  for (const auto& d : r.data) s += " " + render(d);
  if (!r.text.empty() || r.type == Response::Type::continuation || !r.status.empty()) s += " |" + r.text + "|";
  return s;
}

// Feeds `chunks` and renders every event, joining literal data.
std::string run(const std::vector<std::string>& chunks, std::size_t inline_limit) {
  Parser p(inline_limit, 4096);
  std::string out, data;
  for (const auto& c : chunks) {
    p.feed(c);
    while (auto e = p.next()) {
      switch (e->kind) {
        case Event::Kind::response: out += render(e->response) + "\n"; break;
        case Event::Kind::literal_begin: out += "begin " + std::to_string(e->seq) + ":" + std::to_string(e->size) + "\n"; break;
        case Event::Kind::literal_data: data += e->data; break;
        case Event::Kind::literal_end: out += "end " + std::to_string(e->seq) + " [" + data + "]\n", data.clear(); break;
        case Event::Kind::error: out += "error: " + e->error + "\n"; break;
      }
    }
  }
  return out;
}

struct Case {
  const char* name;
  std::string input;
  std::string expected;
  std::size_t inline_limit = 64 * 1024;
};

class ImapParserCases : public ::testing::TestWithParam<Case> {};

TEST_P(ImapParserCases, SameEventsHoweverTheBytesArrive) {
  const Case& c = GetParam();
  EXPECT_EQ(run({c.input}, c.inline_limit), c.expected) << "whole";
  for (std::size_t cut = 1; cut < c.input.size(); ++cut)
    ASSERT_EQ(run({c.input.substr(0, cut), c.input.substr(cut)}, c.inline_limit), c.expected) << "split at " << cut;
  std::vector<std::string> bytes;
  for (char ch : c.input) bytes.emplace_back(1, ch);
  EXPECT_EQ(run(bytes, c.inline_limit), c.expected) << "byte by byte";
}

INSTANTIATE_TEST_SUITE_P(
    Responses, ImapParserCases,
    ::testing::Values(
        Case{"greeting", "* OK [CAPABILITY IMAP4rev1 LITERAL+ SASL-IR IDLE] Dovecot ready.\r\n",
             "* OK [CAPABILITY IMAP4rev1 LITERAL+ SASL-IR IDLE] |Dovecot ready.|\n"},
        Case{"tagged_ok", "a1 OK [READ-WRITE] Select completed (0.001 + 0.000 secs).\r\n",
             "T:a1 OK [READ-WRITE] |Select completed (0.001 + 0.000 secs).|\n"},
        Case{"tagged_no", "a2 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n",
             "T:a2 NO [AUTHENTICATIONFAILED] |Authentication failed.|\n"},
        Case{"uidvalidity", "* OK [UIDVALIDITY 3857529045] UIDs valid\r\n* 172 EXISTS\r\n",
             "* OK [UIDVALIDITY #3857529045] |UIDs valid|\n* #172 EXISTS\n"},
        Case{"flags", "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n",
             "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\n"},
        Case{"permanentflags", "* OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Flags permitted.\r\n",
             "* OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] |Flags permitted.|\n"},
        Case{"list_quoted", "* LIST (\\HasNoChildren \\Sent) \"/\" \"Verzonden items\"\r\n",
             "* LIST (\\HasNoChildren \\Sent) \"/\" \"Verzonden items\"\n"},
        Case{"list_literal", "* LIST () \".\" {10}\r\nFolder \"q\"\r\n", "* LIST () \".\" \"Folder \"q\"\"\n"},
        Case{"quoted_escapes", "* LIST () \"/\" \"a\\\"b\\\\c\"\r\n", "* LIST () \"/\" \"a\"b\\c\"\n"},
        Case{"namespace", "* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n", "* NAMESPACE ((\"\" \"/\")) NIL NIL\n"},
        Case{"fetch_inline",
             "* 12 FETCH (UID 4711 RFC822.SIZE 5 FLAGS (\\Seen) INTERNALDATE \"17-Jul-1996 02:44:25 -0700\" BODY[] {5}\r\nhello)\r\n",
             "* #12 FETCH (UID #4711 RFC822.SIZE #5 FLAGS (\\Seen) INTERNALDATE \"17-Jul-1996 02:44:25 -0700\" BODY[] \"hello\")\n"},
        Case{"fetch_streamed",
             "* 12 FETCH (UID 4711 BODY[] {12}\r\nhello\r\nworld FLAGS (\\Seen))\r\n* 13 FETCH (UID 4712 BODY[] {0}\r\n)\r\n",
             "begin 1:12\nend 1 [hello\r\nworld]\n* #12 FETCH (UID #4711 BODY[] {lit1:12} FLAGS (\\Seen))\n"
             "* #13 FETCH (UID #4712 BODY[] \"\")\n",
             4},
        Case{"two_literals_streamed", "* 1 FETCH (BODY[1] {6}\r\nabcdef BODY[2] {7}\r\nghijklm)\r\n",
             "begin 1:6\nend 1 [abcdef]\nbegin 2:7\nend 2 [ghijklm]\n* #1 FETCH (BODY[1] {lit1:6} BODY[2] {lit2:7})\n", 5},
        Case{"section_with_spaces", "* 1 FETCH (BODY[HEADER.FIELDS (FROM TO)]<0> {3}\r\nabc)\r\n",
             "* #1 FETCH (BODY[HEADER.FIELDS (FROM TO)]<0> \"abc\")\n"},
        Case{"continuation", "+ idling\r\n+\r\n+ \r\n", "+ |idling|\n+ ||\n+ ||\n"},
        Case{"status_text_with_braces", "* OK still here {5}\r\n", "* OK |still here {5}|\n"},
        Case{"bye", "* BYE Server shutting down.\r\n", "* BYE |Server shutting down.|\n"},
        Case{"search_and_lowercase", "* search 2 3 5\r\nA3 ok done\r\n", "* search #2 #3 #5\nT:A3 OK |done|\n"},
        Case{"vanished_nil_case", "* 5 FETCH (UID 9 X-GM-LABELS nil)\r\n", "* #5 FETCH (UID #9 X-GM-LABELS NIL)\n"}),
    [](const auto& info) { return std::string(info.param.name); });

struct Bad {
  const char* name;
  std::string input;
  std::string error;
};

class ImapParserErrors : public ::testing::TestWithParam<Bad> {};

TEST_P(ImapParserErrors, Refused) {
  Parser p(1024, 64);
  p.feed(GetParam().input);
  auto e = p.next();
  ASSERT_TRUE(e);
  ASSERT_EQ(e->kind, Event::Kind::error) << GetParam().input;
  EXPECT_EQ(e->error, GetParam().error);
  EXPECT_TRUE(p.failed());
  EXPECT_FALSE(p.next()) << "a failed parser stays failed";
}

INSTANTIATE_TEST_SUITE_P(
    Table, ImapParserErrors,
    ::testing::Values(Bad{"tagged_data", "a1 FETCH (x)\r\n", "a tagged response must be OK, NO or BAD"},
                      Bad{"unclosed_list", "* 1 FETCH (UID 1\r\n", "unbalanced '(' at the end of a response"},
                      Bad{"extra_close", "* 1 FETCH (UID 1))\r\n", "unbalanced ')'"},
                      Bad{"unterminated_quote", "* LIST () \"/ x\r\n", "unterminated quoted string"},
                      Bad{"bad_escape", "* LIST () \"\\n\"\r\n", "bad escape in quoted string"},
                      Bad{"literal_mid_line", "* 1 FETCH {5} (x)\r\n", "literal announced in the middle of a line"},
                      Bad{"no_body", "*\r\n", "a response needs a tag and a body"},
                      Bad{"nul", std::string("* OK a\0b\r\n", 10), "NUL byte in a response line"},
                      Bad{"unterminated_code", "* OK [ALERT text\r\n", "unterminated response code"},
                      Bad{"too_long", "* OK " + std::string(100, 'x'), "a response line is longer than 64 bytes"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(ImapEncode, AstringQuotingLetsAnyPasswordThrough) {
  EXPECT_EQ(quote_astring("user"), "user");
  EXPECT_EQ(quote_astring(""), "\"\"");
  EXPECT_EQ(quote_astring("pass word"), "\"pass word\"");
  EXPECT_EQ(quote_astring("p\"a\\ss"), "\"p\\\"a\\\\ss\"");
  EXPECT_EQ(quote_astring("INBOX]"), "\"INBOX]\"");
  EXPECT_EQ(quote_astring("wachtwoord-é"), std::nullopt) << "8-bit needs a literal";
  EXPECT_EQ(quote_astring("a\r\nb"), std::nullopt) << "CR/LF need a literal";
  EXPECT_EQ(literal_prefix(13, false), "{13}\r\n");
  EXPECT_EQ(literal_prefix(13, true), "{13+}\r\n");
}

TEST(ImapEncode, ModifiedUtf7RoundTrips) {
  const std::pair<const char*, const char*> rows[] = {
      {"INBOX", "INBOX"},
      {"Verzonden & ontvangen", "Verzonden &- ontvangen"},
      {"Entwürfe", "Entw&APw-rfe"},
      {"~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"},
      {"Facturen 📎", "Facturen &2D3czg-"},
  };
  for (const auto& [utf8, mutf7] : rows) {
    EXPECT_EQ(mailbox_encode(utf8), mutf7) << utf8;
    EXPECT_EQ(mailbox_decode(mutf7), utf8) << mutf7;
  }
  for (const char* bad : {"&Jjo", "&Jjo!-", "a\x80", "&2D0-"}) EXPECT_THROW(mailbox_decode(bad), std::invalid_argument) << bad;
}

}  // namespace
}  // namespace mailgate::imap
