// protocol/imap_parser: a sans-I/O parser for what an IMAP4rev1/rev2 server sends (RFC 3501,
// RFC 9051), and the encoders a client needs to send any string safely.
//
// Feed it bytes as they arrive (split anywhere); pull events. A response is parsed into values
// (atoms, numbers, strings, NIL, lists). Literals up to `inline_limit` bytes arrive inside the
// response as strings; larger ones are streamed: literal_begin, literal_data chunks (views into
// the fed bytes, valid until the next feed()), literal_end, and the response then holds a
// Value of kind literal with its size and sequence number. The parser never holds a large
// literal whole, so a 50 MB message costs 50 MB only where the caller chooses to keep it.
//
// Malformed input gives one event of kind error; the parser then stays failed (the connection
// must be dropped: no resynchronisation is possible in IMAP).
#pragma once
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace mailgate::imap {

struct Value {
  enum class Kind { atom, number, string, nil, list, literal };
  Kind kind = Kind::atom;
  std::string text;              // atom, number (as text), string (contents)
  std::uint64_t number = 0;      // number
  std::vector<Value> items;      // list
  std::uint64_t literal_size = 0;  // literal: size of the streamed data
  std::uint64_t literal_seq = 0;   // literal: sequence number of its literal_begin event

  bool is_atom(std::string_view a) const;  // case-insensitive
  // Atom, number, string or small literal as text; empty for NIL.
  const std::string& as_text() const { return text; }
};

struct Response {
  enum class Type { untagged, tagged, continuation };
  Type type = Type::untagged;
  std::string tag;     // tagged: the command's tag
  std::string status;  // OK, NO, BAD, PREAUTH, BYE (upper-case) for status responses; else empty
  std::vector<Value> code;  // resp-text-code tokens, e.g. [UIDVALIDITY 3857529045] -> UIDVALIDITY, 3857529045
  std::string text;    // human-readable text of a status response or continuation
  std::vector<Value> data;  // untagged data: "* 12 FETCH (...)" -> 12, FETCH, (...)
};

struct Event {
  enum class Kind { response, literal_begin, literal_data, literal_end, error };
  Kind kind;
  Response response;        // response
  std::string_view data;    // literal_data
  std::uint64_t size = 0;   // literal_begin: announced size
  std::uint64_t seq = 0;    // literal_*: sequence number
  std::string error;        // error
};

class Parser {
 public:
  explicit Parser(std::size_t inline_limit = 64 * 1024, std::size_t max_line = 1 << 20);
  void feed(std::string_view bytes);
  std::optional<Event> next();
  bool failed() const { return failed_; }

 private:
  struct Frame {
    std::vector<Value> items;
  };
  Event fail(std::string why);
  bool start_response(std::string_view line);           // parses tag/status of a first segment
  void tokenize(std::string_view segment);               // continues the current response's data
  Response finish();

  std::size_t inline_limit_, max_line_;
  std::string buffer_;
  std::size_t pos_ = 0;      // start of unconsumed bytes in buffer_
  bool failed_ = false;
  bool in_response_ = false;  // a response was started and waits for more segments
  Response current_;
  std::vector<Frame> stack_;  // open lists; stack_[0] is the top level of current_.data
  // A literal being received.
  enum class LiteralMode { none, inline_, streamed } literal_ = LiteralMode::none;
  std::uint64_t literal_left_ = 0, literal_size_ = 0, literal_seq_ = 0;
  std::string literal_inline_;
  bool literal_begun_ = false;
};

// Encoders for commands.

// An astring argument: an atom when it is one, else a quoted string when that is possible, else
// nullopt (the caller must send a literal: any byte outside printable ASCII, or CR/LF, needs one).
std::optional<std::string> quote_astring(std::string_view s);
// "{N}\r\n" or, with LITERAL+ (or LITERAL- and N <= 4096), "{N+}\r\n".
std::string literal_prefix(std::size_t size, bool non_synchronising);

// Modified UTF-7 (RFC 3501 5.1.3) for mailbox names. decode throws std::invalid_argument.
std::string mailbox_encode(std::string_view utf8);
std::string mailbox_decode(std::string_view mutf7);

}  // namespace mailgate::imap
