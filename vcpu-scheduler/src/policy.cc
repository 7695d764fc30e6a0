#include "policy.h"

#include <charconv>
#include <cmath>
#include <stdexcept>

#include <fmt/format.h>

namespace aggvm::sched {

namespace {

[[noreturn]] void invalid(const std::string& why) { throw std::invalid_argument(why); }

double parse_weight(std::string_view goal, std::string_view text) {
  double w = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), w);
  if (ec != std::errc() || end != text.data() + text.size() || !std::isfinite(w))
    invalid(fmt::format("weight '{}' of {} is not a number", text, goal));
  if (w < 0 || w > kMaxWeight) invalid(fmt::format("weight {} of {} is outside 0..{}", w, goal, kMaxWeight));
  return w;
}

}  // namespace

Weights parse_weights(std::string_view spec) {
  Weights w;
  if (spec == "none") return w;
  if (spec.empty()) invalid("no goal named (use \"none\" for none)");
  bool seen[3] = {false, false, false};
  while (!spec.empty()) {
    const size_t comma = spec.find(',');
    std::string_view item = spec.substr(0, comma);
    spec = comma == std::string_view::npos ? std::string_view() : spec.substr(comma + 1);
    const size_t eq = item.find('=');
    const std::string_view goal = item.substr(0, eq);
    const double weight = eq == std::string_view::npos ? 1.0 : parse_weight(goal, item.substr(eq + 1));
    int i;
    double* slot;
    if (goal == "affinity") {
      i = 0, slot = &w.affinity;
    } else if (goal == "balance") {
      i = 1, slot = &w.balance;
    } else if (goal == "consolidate") {
      i = 2, slot = &w.consolidate;
    } else {
      invalid(fmt::format("unknown goal '{}': affinity, balance or consolidate (health and make-room are always "
                          "on)",
                          goal));
    }
    if (seen[i]) invalid(fmt::format("goal {} named twice", goal));
    seen[i] = true;
    *slot = weight;
  }
  return w;
}

std::string describe(const Weights& w) {
  std::string out;
  auto add = [&](const char* goal, double weight) {
    if (weight > 0) out += fmt::format("{}{}={:g}", out.empty() ? "" : ",", goal, weight);
  };
  add("affinity", w.affinity);
  add("balance", w.balance);
  add("consolidate", w.consolidate);
  return out.empty() ? "none" : out;
}

void validate(const Policy& p) {
  if (p.budget > 1024) invalid(fmt::format("a budget of {} moves per interval", p.budget));
  if (!(p.min_gain >= 0 && p.min_gain < 1)) invalid(fmt::format("min_gain {} is outside 0..1", p.min_gain));
  if (!(p.horizon >= 1 && p.horizon <= 1e6)) invalid(fmt::format("horizon {} is outside 1..1e6", p.horizon));
  if (!(p.fill > 0 && p.fill <= 1)) invalid(fmt::format("fill {} is outside (0, 1]", p.fill));
  for (double w : {p.weights.affinity, p.weights.balance, p.weights.consolidate})
    if (!(w >= 0 && w <= kMaxWeight)) invalid(fmt::format("weight {} is outside 0..{}", w, kMaxWeight));
}

}  // namespace aggvm::sched
