// protocol/gmime_util: what protocol/mime.cpp and protocol/compose.cpp share about GMime 3: the
// one-time library initialisation, owning pointers for its GObjects, and reading its strings and
// address lists. Internal to protocol/.
#pragma once
#include <gmime/gmime.h>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "rules/message.hpp"

namespace mailgate::gmime {

inline void init() {
  static std::once_flag once;
  std::call_once(once, [] { g_mime_init(); });
}

template <class T>
struct Unref {
  void operator()(T* p) const {
    if (p) g_object_unref(p);
  }
};
// Owns one reference to a GObject.
template <class T>
using Ptr = std::unique_ptr<T, Unref<T>>;

// `s` as UTF-8, undecodable bytes as U+FFFD; "" for null.
inline std::string valid_utf8(const char* s, gssize len = -1) {
  if (!s) return {};
  gchar* v = g_utf8_make_valid(s, len);
  std::string out(v);
  g_free(v);
  return out;
}

// The mailboxes of an address list, those of groups included, in order.
inline void read_addresses(InternetAddressList* list, std::vector<MailAddress>& out) {
  if (!list) return;
  for (int i = 0; i < internet_address_list_length(list); ++i) {
    InternetAddress* a = internet_address_list_get_address(list, i);
    if (INTERNET_ADDRESS_IS_GROUP(a)) {
      read_addresses(internet_address_group_get_members(INTERNET_ADDRESS_GROUP(a)), out);
    } else if (INTERNET_ADDRESS_IS_MAILBOX(a)) {
      out.push_back({valid_utf8(internet_address_get_name(a)), valid_utf8(internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(a)))});
    }
  }
}

}  // namespace mailgate::gmime
