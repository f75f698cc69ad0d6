// store/sql: PostgreSQL array literals for binding a list as one parameter
// (`= ANY($1::text[])`, `unnest($1::bigint[])`).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace mailgate {

std::string sql_text_array(const std::vector<std::string>& items);  // {"a","b\"c"}
std::string sql_id_array(const std::vector<std::int64_t>& ids);      // {1,2,3}

}  // namespace mailgate
