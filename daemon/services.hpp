// What route handlers and background tasks get: the long-lived components of one daemon,
// constructed once in daemon/app.cpp and valid for the whole life of the process.
#pragma once
#include <atomic>
#include <functional>

#include "config/config.hpp"

namespace mailgate {

class Store;
class Metrics;
class SecretBox;
class Router;

struct Services {
  const Config& config;
  Store& store;
  Metrics& metrics;
  const SecretBox& secrets;
  std::atomic<bool>& stopping;  // set when shutdown began: /readyz answers 503
  std::function<void()> outbox_wake;  // something was queued: the outbox worker looks at once
};

void register_health_routes(Router& router, Services& services);
void register_web_routes(Router& router);

}  // namespace mailgate
