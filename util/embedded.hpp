// Files compiled into the binary by cmake/embed.cmake (SQL migrations, the web UI).
#pragma once
#include <string_view>
#include <vector>

namespace mailgate {

struct EmbeddedFile {
  std::string_view name;   // base name, e.g. "0001_init.sql"
  std::string_view bytes;  // file contents, exactly as on disk
};

const std::vector<EmbeddedFile>& embedded_migrations();  // sorted by name
const std::vector<EmbeddedFile>& embedded_web();         // sorted by name
const std::vector<EmbeddedFile>& embedded_openapi();     // sorted by name

}  // namespace mailgate
