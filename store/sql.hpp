// store/sql: PostgreSQL arrays: literals for binding a list as one parameter
// (`= ANY($1::text[])`, `unnest($1::bigint[])`), and text[] columns read back.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace pqxx {
class field;
}

namespace mailgate {

std::string sql_text_array(const std::vector<std::string>& items);  // {"a","b\"c"}
std::string sql_id_array(const std::vector<std::int64_t>& ids);      // {1,2,3}
// A text[] column read back; NULL elements skipped, a NULL array is empty.
std::vector<std::string> sql_text_list(const pqxx::field& f);

}  // namespace mailgate
