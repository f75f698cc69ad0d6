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
class GraphTokens;
class GraphSlots;

struct Services {
  const Config& config;
  Store& store;
  Metrics& metrics;
  const SecretBox& secrets;
  std::atomic<bool>& stopping;  // set when shutdown began: /readyz answers 503
  std::function<void()> outbox_wake;  // something was queued: the outbox worker looks at once
  GraphTokens* graph_tokens = nullptr;  // OAuth2 tokens for Microsoft 365 (daemon/graph_tokens.hpp): Graph in and out, XOAUTH2
  GraphSlots* graph_slots = nullptr;    // each mailbox's concurrent Graph requests, in and out (daemon/graph_slots.hpp)
  std::function<void()> mailboxes_changed = nullptr;  // a mailbox was saved or reconnected: the inbound supervisors look at once
};

void register_health_routes(Router& router, Services& services);
void register_web_routes(Router& router);

}  // namespace mailgate
