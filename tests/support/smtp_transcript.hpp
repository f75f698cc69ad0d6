// SMTP transcripts (tests/transcripts/smtp/*.txt), replayed against the in-memory session
// (tests/protocol/smtp_session_test) and against the running daemon (tests/daemon/smtp_receiver_test).
//
// Format, one step a line ('#' lines are comments):
//   S: <reply line>   the server's next line must match ("*" matches any run of characters);
//                     "S: <closed>" means the server closed the connection
//   C: <line>         the client sends the line and CRLF ("C:" alone: an empty line)
//   C~ <bytes>        the client sends the bytes as they are, no CRLF added
//   R: <n>            the previous client step is sent n times in all
// In C lines \r \n \t and \\ are escapes. Client steps up to the next S: go out in one write, as a
// pipelining client sends them. {name} is replaced by vars["{name}"].
#pragma once
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace mailgate::test {

struct TranscriptStep {
  bool client = false;  // true: bytes to send; false: the reply line expected
  std::string text;
};

std::vector<TranscriptStep> load_transcript(const std::filesystem::path& file, const std::map<std::string, std::string>& vars);
// The transcript files, sorted by name.
std::vector<std::filesystem::path> smtp_transcripts();
// Does `line` match the pattern of an S: step?
bool transcript_line_matches(const std::string& pattern, const std::string& line);

}  // namespace mailgate::test
