// One UploadPayload call: bytes stream in, are hashed as they pass, and
// are written to the store in chunks of kChunkSize, so memory holds at most
// one chunk plus one request whatever the payload's size.
//
// Thread safety: none; one caller at a time (the upload reactor runs one
// task at a time). Append/Finish/Abort block on the store: call them from
// the worker pool.
#ifndef PGBUS_SERVICE_BUS_UPLOAD_H_
#define PGBUS_SERVICE_BUS_UPLOAD_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "service/common/sha256.h"
#include "service/store/store.h"

namespace pgbus::bus {

inline constexpr int kChunkSize = 1 << 20;

// The data of one UploadPayload request: at most kChunkSize bytes, so that
// a call holds a bounded amount of memory (INVALID_ARGUMENT naming the
// field otherwise).
absl::Status ValidateUploadData(size_t bytes);

class Upload {
 public:
  struct Result {
    std::string handle;
    int64_t size = 0;
    std::string sha256;
  };

  // NOT_FOUND for an unknown topic.
  // `tenant_max_bytes`: the tenant's max_message_bytes quota (0: none).
  static absl::StatusOr<std::unique_ptr<Upload>> Begin(store::PayloadStore* store,
                                                       std::string tenant,
                                                       const std::string& topic,
                                                       int64_t max_bytes, bool compressed,
                                                       int64_t tenant_max_bytes = 0);
  // INVALID_ARGUMENT past max_bytes, RESOURCE_EXHAUSTED past the topic's or
  // the tenant's max_message_bytes (and the upload is aborted: nothing stays
  // stored).
  absl::Status Append(absl::string_view data);
  // Writes the rest, compares `client_sha256` when given (DATA_LOSS on a
  // mismatch, and nothing is kept), and completes the upload.
  absl::StatusOr<Result> Finish(const std::string& client_sha256);
  // Deletes everything stored so far. Idempotent; a no-op once finished.
  void Abort();
  bool finished() const { return finished_; }

 private:
  Upload(store::PayloadStore* store, std::string tenant, std::string topic, int64_t id,
         int64_t max_bytes, int64_t topic_max_bytes, int64_t tenant_max_bytes)
      : store_(store),
        tenant_(std::move(tenant)),
        topic_(std::move(topic)),
        id_(id),
        max_bytes_(max_bytes),
        topic_max_bytes_(topic_max_bytes),
        tenant_max_bytes_(tenant_max_bytes) {}
  absl::Status Flush();

  store::PayloadStore* const store_;
  const std::string tenant_;
  const std::string topic_;
  const int64_t id_;
  const int64_t max_bytes_;
  const int64_t topic_max_bytes_;  // 0: none
  const int64_t tenant_max_bytes_;  // 0: none
  std::string buffer_;
  int seq_ = 0;
  int64_t size_ = 0;
  Sha256Stream hash_;
  bool finished_ = false;
  bool aborted_ = false;
};

// Upload handles travel as decimal strings. INVALID_ARGUMENT otherwise.
absl::StatusOr<int64_t> DecodePayloadHandle(absl::string_view handle);

}  // namespace pgbus::bus

#endif  // PGBUS_SERVICE_BUS_UPLOAD_H_
