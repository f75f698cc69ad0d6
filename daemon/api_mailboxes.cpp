// Placeholder until the mailboxes API lands (being written now).
#include "daemon/api.hpp"

namespace mailgate {

void register_mailbox_routes(Api&) {}

}  // namespace mailgate
