// protocol/mime: reading a raw RFC 5322 message into the fields mailgate stores, with GMime 3.
//
// Contract: parse_message() never throws and never refuses. Whatever GMime cannot make sense of
// becomes a warning, and the caller stores the raw bytes anyway (byte-exact), so a broken message
// never blocks a mailbox. Every returned string is valid UTF-8: headers are RFC 2047-decoded and
// bodies converted from their charset; undecodable bytes become U+FFFD.
//
// The second form also says, for each attachment, where its content lies in `raw` when its decoded
// bytes can be had from there exactly (a store then need not keep them twice): an unencoded part,
// or base64 that every decoder reads alike (only the base64 alphabet in whole quanta, line breaks
// and spaces; padding at the end only). Such base64 is decoded by mailgate itself in one pass;
// anything else by GMime.
#pragma once
#include <cstddef>
#include <optional>
#include <string_view>
#include <vector>

#include "rules/message.hpp"

namespace mailgate {

struct ContentSpan {
  std::size_t offset = 0, length = 0;  // bytes of raw
  bool base64 = false;                 // else the bytes themselves
};

ParsedMessage parse_message(std::string_view raw);
// `spans` gets one entry per attachment of the result, in order.
ParsedMessage parse_message(std::string_view raw, std::vector<std::optional<ContentSpan>>& spans);

}  // namespace mailgate
