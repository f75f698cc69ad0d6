// protocol/gmime_util: what protocol/mime.cpp and protocol/compose.cpp share about GMime 3: the
// one-time library initialisation and owning pointers for its GObjects. Internal to protocol/.
#pragma once
#include <gmime/gmime.h>

#include <memory>
#include <mutex>

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

}  // namespace mailgate::gmime
