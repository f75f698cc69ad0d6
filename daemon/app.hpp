// The mailgated command line: `serve` (default), `migrate`, `check-config`, `user add`, `version`.
// Returns the process exit status: 0 ok, 1 runtime failure, 2 usage error, 78 configuration error.
#pragma once

namespace mailgate {

int mailgated_main(int argc, char** argv);

}  // namespace mailgate
