#include "service/auth/limiter.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace pgbus::auth {

absl::Status Limiter::AdmitPublish(const Principal& principal, int64_t messages) {
  if (!principal.quotas.max_publish_rate) return absl::OkStatus();
  const double rate = *principal.quotas.max_publish_rate;
  if (messages > rate) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "a Publish of ", messages, " messages exceeds the tenant quota max_publish_rate=",
        *principal.quotas.max_publish_rate, " messages/s; publish in smaller batches"));
  }
  absl::Time now = absl::Now();
  absl::MutexLock lock(&mu_);
  auto [it, fresh] = buckets_.try_emplace(principal.tenant);
  Bucket& b = it->second;
  if (fresh) {
    b.tokens = rate;
  } else {
    b.tokens = std::min(rate, b.tokens + absl::ToDoubleSeconds(now - b.refilled) * rate);
  }
  b.refilled = now;
  if (b.tokens < static_cast<double>(messages)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "tenant quota max_publish_rate=", *principal.quotas.max_publish_rate,
        " messages/s reached; retry with backoff or ask the operator to raise it"));
  }
  b.tokens -= static_cast<double>(messages);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Limiter::StreamSlot>> Limiter::AcquireStream(
    const Principal& principal) {
  absl::MutexLock lock(&mu_);
  if (streams_ >= max_streams_) {
    return absl::UnavailableError(absl::StrCat("server overloaded: it serves max_streams=",
                                               max_streams_,
                                               " streams; retry with backoff or another replica"));
  }
  int& mine = tenant_streams_[principal.tenant];
  if (principal.quotas.max_streams && mine >= *principal.quotas.max_streams) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "tenant quota max_streams=", *principal.quotas.max_streams,
        " reached: close a Subscribe stream first or ask the operator to raise it"));
  }
  ++mine;
  ++streams_;
  return std::unique_ptr<StreamSlot>(new StreamSlot(this, principal.tenant));
}

void Limiter::Release(const std::string& tenant) {
  absl::MutexLock lock(&mu_);
  --streams_;
  auto it = tenant_streams_.find(tenant);
  if (it != tenant_streams_.end() && --it->second == 0) tenant_streams_.erase(it);
}

Limiter::StreamSlot::~StreamSlot() { limiter_->Release(tenant_); }

}  // namespace pgbus::auth
