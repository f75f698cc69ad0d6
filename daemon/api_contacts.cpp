// Placeholder until the contacts API lands (being written now).
#include "daemon/api.hpp"

namespace mailgate {

void register_contact_routes(Api&) {}

}  // namespace mailgate
