// Limits a pgbusd process enforces itself, without a database round trip:
// each tenant's publish rate (a token bucket holding one second's worth) and
// its Subscribe streams, and the streams of the whole server. Per replica:
// with N replicas a tenant may reach N times these figures.
//
// Thread safety: all methods may be called from any thread.
#ifndef PGBUS_SERVICE_AUTH_LIMITER_H_
#define PGBUS_SERVICE_AUTH_LIMITER_H_

#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "service/auth/principal.h"

namespace pgbus::auth {

class Limiter {
 public:
  // `max_streams`: Subscribe streams of the whole process.
  explicit Limiter(int max_streams) : max_streams_(max_streams) {}

  // Takes `messages` from the tenant's bucket; RESOURCE_EXHAUSTED naming
  // max_publish_rate when it does not hold that many.
  absl::Status AdmitPublish(const Principal& principal, int64_t messages);

  // A stream's place, given back when destroyed.
  class StreamSlot {
   public:
    ~StreamSlot();
    StreamSlot(const StreamSlot&) = delete;
    StreamSlot& operator=(const StreamSlot&) = delete;

   private:
    friend class Limiter;
    StreamSlot(Limiter* limiter, std::string tenant)
        : limiter_(limiter), tenant_(std::move(tenant)) {}
    Limiter* limiter_;
    std::string tenant_;
  };
  // UNAVAILABLE when the server has max_streams streams (try another
  // replica); RESOURCE_EXHAUSTED when the tenant has its max_streams.
  absl::StatusOr<std::unique_ptr<StreamSlot>> AcquireStream(const Principal& principal);

 private:
  struct Bucket {
    double tokens = 0;
    absl::Time refilled;
  };
  void Release(const std::string& tenant);

  const int max_streams_;
  absl::Mutex mu_;
  std::map<std::string, Bucket> buckets_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> tenant_streams_ ABSL_GUARDED_BY(mu_);
  int streams_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace pgbus::auth

#endif  // PGBUS_SERVICE_AUTH_LIMITER_H_
