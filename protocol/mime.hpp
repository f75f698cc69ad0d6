// protocol/mime: reading a raw RFC 5322 message into the fields mailgate stores, with GMime 3.
//
// Contract: parse_message() never throws and never refuses. Whatever GMime cannot make sense of
// becomes a warning, and the caller stores the raw bytes anyway (byte-exact), so a broken message
// never blocks a mailbox. Every returned string is valid UTF-8: headers are RFC 2047-decoded and
// bodies converted from their charset; undecodable bytes become U+FFFD.
#pragma once
#include <string_view>

#include "rules/message.hpp"

namespace mailgate {

ParsedMessage parse_message(std::string_view raw);

}  // namespace mailgate
