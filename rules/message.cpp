#include "rules/message.hpp"

namespace mailgate {

std::vector<std::string> ParsedMessage::linkable_addresses() const {
  std::vector<std::string> out;
  for (const auto* list : {&from, &to, &cc, &reply_to})
    for (const auto& a : *list) out.push_back(a.address);
  return out;
}

}  // namespace mailgate
