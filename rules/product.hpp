// rules/product: products as in the Econobis seed ("Producten en orders"). A product has a
// duration (looptijd) that never changes after creation, and a "price per" that must fit inside
// that duration:
//   duration none (one-off, "geen")  -> price per none (eenmalig) only
//   fixed duration (month, quarter, half_year, year) -> none (one price for the whole term) or a
//     period no longer than the duration that divides it (a quarter can be priced per month or
//     per quarter, not per half year or year)
//   until_cancelled ("tot opzegging") -> any period (month, quarter, half_year, year), not none
#pragma once
#include <optional>
#include <string>
#include <string_view>

namespace mailgate {

enum class Duration { none, month, quarter, half_year, year, until_cancelled };
enum class PricePer { none, month, quarter, half_year, year };

std::optional<Duration> parse_duration(std::string_view s);  // "none", "month", ..., "until_cancelled"
std::optional<PricePer> parse_price_per(std::string_view s);  // "none", "month", "quarter", "half_year", "year"
std::string to_string(Duration d);
std::string to_string(PricePer p);

// Null when the combination is allowed, else why not (in words for the admin).
std::optional<std::string> product_price_per_violation(Duration duration, PricePer price_per);

}  // namespace mailgate
