// store/prepared: running a statement that a connection runs again and again as a prepared one.
// pqxx keeps the definitions per connection and re-registers them after a reconnect; preparing
// again with the same text is a no-op (with another text under the same name it throws: a name
// belongs to one text). Parsing and planning for every execution took about a third of
// PostgreSQL's CPU in the outbox and receiver benchmarks (bench/README.md).
#pragma once
#include <string>
#include <utility>

#include <pqxx/pqxx>

namespace mailgate {

template <class... Args>
pqxx::result exec_prepared(pqxx::transaction_base& tx, const std::string& name, const std::string& sql, Args&&... args) {
  tx.conn().prepare(name, sql);
  return tx.exec_prepared(name, std::forward<Args>(args)...);
}

}  // namespace mailgate
