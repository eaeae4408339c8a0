#include "service/api/upload_reactor.h"

#include <memory>
#include <optional>
#include <utility>

#include "service/api/convert.h"
#include "service/common/status_macros.h"
#include "service/obs/log.h"

namespace pgbus::api {
namespace {

// One UploadPayload stream. Reads one request at a time; the next read
// starts only after the worker pool has written what the last one
// completed, so a fast client cannot fill pgbusd's memory (backpressure
// through HTTP/2 flow control). Ends with the handle, or deletes what was
// stored.
class UploadReactor final : public grpc::ServerReadReactor<v1::UploadPayloadRequest> {
 public:
  UploadReactor(bus::Uploads* uploads, const CallContext& cc, grpc::CallbackServerContext* ctx,
                v1::UploadPayloadResponse* resp)
      : uploads_(uploads),
        cc_(cc),
        creds_(CredentialsOf(ctx)),
        ctx_(ctx),
        resp_(resp),
        // One request being read, one chunk being filled, one being written.
        memory_(cc.memory->TryReserve(3 * int64_t{bus::kChunkSize})) {
    if (!memory_) {
      Finish(OutOfCallMemory(*cc_.memory));
      return;
    }
    StartRead(&req_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      if (ctx_->IsCancelled()) return Fail(absl::CancelledError("the upload was cancelled"));
      Submit([this] { Complete(); });
      return;
    }
    if (first_) {
      first_ = false;
      topic_ = req_.topic();
      compressed_ = req_.compressed();
    }
    if (!req_.sha256().empty()) client_sha256_ = req_.sha256();
    if (absl::Status st = bus::ValidateUploadData(req_.data().size()); !st.ok()) return Fail(st);
    Submit([this, data = std::move(*req_.mutable_data())] {
      if (absl::Status st = Begin(); !st.ok()) return Fail(st);
      if (absl::Status st = upload_->Append(data); !st.ok()) return Fail(st);
      StartRead(&req_);
    });
  }

  void OnDone() override {
    if (upload_ && !upload_->finished()) {
      // Broke off: delete what was stored, on the pool, never on this gRPC
      // thread. With the pool full, the reaper deletes it as an abandoned
      // upload (after a day; its bytes count against the quota meanwhile).
      std::shared_ptr<bus::Upload> upload = std::move(upload_);
      if (!cc_.pool->Submit([upload] { upload->Abort(); })) {
        obs::Warn("upload_left_to_reaper", {{"reason", "worker pool full"}});
      }
    }
    delete this;
  }

 private:
  template <typename Fn>
  void Submit(Fn fn) {
    if (!cc_.pool->Submit(std::move(fn))) Fail(absl::UnavailableError("server overloaded; retry"));
  }

  // On the pool, before the first chunk is stored: authenticates, checks
  // the publish scope on the topic, and starts the upload.
  absl::Status Begin() {
    if (upload_) return absl::OkStatus();
    ASSIGN_OR_RETURN(principal_, cc_.auth->Authenticate(creds_));
    RETURN_IF_ERROR(principal_.Check(auth::Scope::kPublish, topic_));
    ASSIGN_OR_RETURN(upload_, uploads_->BeginUpload(principal_.tenant, topic_, compressed_,
                                                    LimitsOf(principal_)));
    return absl::OkStatus();
  }

  void Complete() {
    // No request at all, or only empty ones, still make an (empty) upload.
    if (absl::Status st = Begin(); !st.ok()) return Fail(st);
    if (ctx_->IsCancelled()) return Fail(absl::CancelledError("the upload was cancelled"));
    auto result = upload_->Finish(client_sha256_);
    if (!result.ok()) return Fail(result.status());
    resp_->set_payload_handle(result->handle);
    resp_->set_size(result->size);
    resp_->set_sha256(result->sha256);
    Finish(grpc::Status::OK);
  }

  // OnDone() deletes whatever an unfinished upload stored, on the pool.
  void Fail(const absl::Status& status) { Finish(ToGrpcStatus(status)); }

  bus::Uploads* const uploads_;
  const CallContext cc_;
  const auth::Credentials creds_;
  auth::Principal principal_;  // set by Begin()
  grpc::CallbackServerContext* const ctx_;
  v1::UploadPayloadResponse* const resp_;
  v1::UploadPayloadRequest req_;
  bool first_ = true;
  std::string topic_;
  bool compressed_ = false;
  std::string client_sha256_;
  std::shared_ptr<bus::Upload> upload_;
  std::shared_ptr<MemoryBudget::Reservation> memory_;  // for the call's life
};

}  // namespace

grpc::ServerReadReactor<v1::UploadPayloadRequest>* NewUploadReactor(
    bus::Uploads* uploads, const CallContext& cc, grpc::CallbackServerContext* ctx,
    v1::UploadPayloadResponse* resp) {
  return new UploadReactor(uploads, cc, ctx, resp);
}

}  // namespace pgbus::api
