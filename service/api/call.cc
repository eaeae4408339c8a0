#include "service/api/call.h"

#include "absl/strings/str_cat.h"

namespace pgbus::api {

auth::Credentials CredentialsOf(grpc::CallbackServerContext* ctx) {
  auth::Credentials creds;
  const auto& md = ctx->client_metadata();
  if (auto it = md.find("authorization"); it != md.end()) {
    creds.authorization = std::string(it->second.data(), it->second.size());
  }
  std::shared_ptr<const grpc::AuthContext> ac = ctx->auth_context();
  if (ac && ac->IsPeerAuthenticated()) {
    for (const auto& cn : ac->FindPropertyValues("x509_common_name")) {
      creds.cert_common_name = std::string(cn.data(), cn.size());
    }
  }
  return creds;
}

grpc::Status OutOfCallMemory(const MemoryBudget& memory) {
  return grpc::Status(
      grpc::StatusCode::UNAVAILABLE,
      absl::StrCat("server overloaded: the memory for calls in flight (max_call_memory_mb=",
                   memory.limit() >> 20, ") is in use; retry with backoff"));
}

absl::Status AuthorizeSubscription(bus::Bus& bus, const auth::Principal& principal,
                                   auth::Scope scope, const std::string& subscription,
                                   std::optional<auth::Scope> alt) {
  if (alt && !principal.HasScope(scope) && principal.HasScope(*alt)) scope = *alt;
  if (absl::Status st = principal.CheckScope(scope); !st.ok()) return st;
  if (principal.AllTopics()) return absl::OkStatus();
  absl::StatusOr<model::SubscriptionRecord> sub = bus.GetSubscription(principal.tenant,
                                                                     subscription);
  if (!sub.ok()) return sub.status();
  return principal.Check(scope, sub->topic);
}

}  // namespace pgbus::api
