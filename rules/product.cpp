#include "rules/product.hpp"

namespace mailgate {

namespace {
int months(Duration d) {
  switch (d) {
    case Duration::month: return 1;
    case Duration::quarter: return 3;
    case Duration::half_year: return 6;
    case Duration::year: return 12;
    default: return 0;
  }
}
int months(PricePer p) {
  switch (p) {
    case PricePer::month: return 1;
    case PricePer::quarter: return 3;
    case PricePer::half_year: return 6;
    case PricePer::year: return 12;
    default: return 0;
  }
}
}  // namespace

std::optional<Duration> parse_duration(std::string_view s) {
  for (auto d : {Duration::none, Duration::month, Duration::quarter, Duration::half_year, Duration::year, Duration::until_cancelled})
    if (to_string(d) == s) return d;
  return std::nullopt;
}

std::optional<PricePer> parse_price_per(std::string_view s) {
  for (auto p : {PricePer::none, PricePer::month, PricePer::quarter, PricePer::half_year, PricePer::year})
    if (to_string(p) == s) return p;
  return std::nullopt;
}

std::string to_string(Duration d) {
  switch (d) {
    case Duration::none: return "none";
    case Duration::month: return "month";
    case Duration::quarter: return "quarter";
    case Duration::half_year: return "half_year";
    case Duration::year: return "year";
    case Duration::until_cancelled: return "until_cancelled";
  }
  return "none";
}

std::string to_string(PricePer p) {
  switch (p) {
    case PricePer::none: return "none";
    case PricePer::month: return "month";
    case PricePer::quarter: return "quarter";
    case PricePer::half_year: return "half_year";
    case PricePer::year: return "year";
  }
  return "none";
}

std::optional<std::string> product_price_per_violation(Duration duration, PricePer price_per) {
  if (duration == Duration::none) {
    if (price_per != PricePer::none) return "a one-off product (duration none) has a one-off price, not a price per " + to_string(price_per);
    return std::nullopt;
  }
  if (duration == Duration::until_cancelled) {
    if (price_per == PricePer::none) return "a product that runs until cancelled needs a price per period (month, quarter, half_year or year)";
    return std::nullopt;
  }
  if (price_per == PricePer::none) return std::nullopt;
  if (months(price_per) > months(duration) || months(duration) % months(price_per) != 0)
    return "a price per " + to_string(price_per) + " does not fit a duration of one " + to_string(duration);
  return std::nullopt;
}

}  // namespace mailgate
