// `mailgated serve`; see serve.cpp.
#pragma once
#include <filesystem>

#include "config/config.hpp"

namespace mailgate {

int serve(const Config& config);

// Where the secrets key is read from: [secrets].key_file, else the systemd credential.
std::filesystem::path secrets_key_path(const Config& config);

}  // namespace mailgate
