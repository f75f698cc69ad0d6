// rules/product: every duration × price-per combination, with its verdict.
#include <gtest/gtest.h>

#include <array>

#include "rules/product.hpp"

namespace mailgate {
namespace {

TEST(Product, EveryCombination) {
  // rows: durations; columns: none, month, quarter, half_year, year (1 = allowed)
  const std::vector<std::pair<Duration, std::array<int, 5>>> table = {
      {Duration::none, {1, 0, 0, 0, 0}},      {Duration::month, {1, 1, 0, 0, 0}},
      {Duration::quarter, {1, 1, 1, 0, 0}},   {Duration::half_year, {1, 1, 1, 1, 0}},
      {Duration::year, {1, 1, 1, 1, 1}},      {Duration::until_cancelled, {0, 1, 1, 1, 1}},
  };
  const PricePer columns[] = {PricePer::none, PricePer::month, PricePer::quarter, PricePer::half_year, PricePer::year};
  for (const auto& [duration, allowed] : table)
    for (int i = 0; i < 5; ++i)
      EXPECT_EQ(!product_price_per_violation(duration, columns[i]), allowed[i] == 1)
          << to_string(duration) << " × " << to_string(columns[i]);
  EXPECT_EQ(*product_price_per_violation(Duration::none, PricePer::month),
            "a one-off product (duration none) has a one-off price, not a price per month");
}

TEST(Product, ParsingRoundTrips) {
  for (const char* s : {"none", "month", "quarter", "half_year", "year", "until_cancelled"}) EXPECT_EQ(to_string(*parse_duration(s)), s);
  for (const char* s : {"none", "month", "quarter", "half_year", "year"}) EXPECT_EQ(to_string(*parse_price_per(s)), s);
  EXPECT_FALSE(parse_duration("forever"));
  EXPECT_FALSE(parse_price_per("until_cancelled"));
  EXPECT_FALSE(parse_duration("Month"));
}

}  // namespace
}  // namespace mailgate
