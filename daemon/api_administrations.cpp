// Placeholder until the administrations API lands (being written now).
#include "daemon/api.hpp"

namespace mailgate {

void register_administration_routes(Api&) {}

}  // namespace mailgate
