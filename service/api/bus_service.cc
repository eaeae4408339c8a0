#include "service/api/bus_service.h"

#include <memory>
#include <optional>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "service/api/convert.h"
#include "service/bus/ack_id.h"
#include "service/common/status_macros.h"
#include "service/obs/log.h"

namespace pgbus::api {
namespace {

template <typename Response>
void FillResults(const std::vector<std::string>& ids, const bus::LeaseResults& ok,
                 Response* resp) {
  for (size_t i = 0; i < ids.size(); ++i) {
    auto* r = resp->add_results();
    r->set_ack_id(ids[i]);
    r->set_status(ok[i] ? v1::ACK_STATUS_OK : v1::ACK_STATUS_EXPIRED);
  }
}

class SubscribeReactor;

// The dispatcher's handle on a reactor. The reactor deletes itself in
// OnDone(); the guard outlives it (shared with the stream) and refuses to
// forward once it is gone, so a batch claimed just as the client left
// cannot touch freed memory.
class SinkGuard : public bus::StreamSink {
 public:
  explicit SinkGuard(SubscribeReactor* reactor) : reactor_(reactor) {}
  bool Send(std::vector<model::Delivery> batch) override;
  void End(const absl::Status& status) override;
  void Detach() {
    absl::MutexLock lock(&mu_);
    reactor_ = nullptr;
  }

 private:
  absl::Mutex mu_;
  SubscribeReactor* reactor_ ABSL_GUARDED_BY(mu_);
};

// One Subscribe stream: one write in flight, driven by OnWriteDone. Finish
// is deferred while a write or the start-up is in flight, and happens once.
class SubscribeReactor final : public grpc::ServerWriteReactor<v1::SubscribeResponse> {
 public:
  SubscribeReactor(bus::Bus* bus, const CallContext& cc, grpc::CallbackServerContext* ctx,
                   const v1::SubscribeRequest* req)
      : guard_(std::make_shared<SinkGuard>(this)) {
    bus::SubscribeParams params;
    params.subscription = req->subscription();
    params.max_outstanding_messages = req->max_outstanding_messages();
    params.max_outstanding_bytes = req->max_outstanding_bytes();
    absl::Status bad;
    if (req->has_ack_deadline()) {
      auto d = FromProto("ack_deadline", req->ack_deadline());
      if (d.ok()) {
        params.ack_deadline = *d;
      } else {
        bad = d.status();
      }
    }
    if (!bad.ok()) {
      starting_ = false;
      Finish(ToGrpcStatus(bad));
      return;
    }
    if (!cc.pool->Submit([this, bus, cc, creds = CredentialsOf(ctx), params] {
          Start(bus, cc, creds, params);
        })) {
      starting_ = false;
      Finish(Overloaded());
    }
  }

  // Takes the batch for writing; false once the stream is finishing. A true
  // return pins the reactor (no Finish, so no OnDone) until the write
  // completes, so the caller may StartWrite() without holding any lock.
  bool PrepareSend(std::vector<model::Delivery> batch) {
    absl::MutexLock lock(&mu_);
    if (finished_) return false;
    writing_ = true;
    response_.Clear();
    for (auto& d : batch) {
      auto* rm = response_.add_messages();
      rm->set_ack_id(bus::EncodeAckId({d.message.id, d.attempt, d.lease}));
      rm->set_delivery_attempt(d.attempt);
      ToProto(d.message, rm->mutable_message());
    }
    return true;
  }
  void WritePrepared() { StartWrite(&response_); }

  // Marks the stream finished; returns the status to Finish() with now, or
  // nothing when a write or the start-up will finish it (or it already
  // was). Only the caller that gets a status calls Finish, so the reactor
  // stays alive until it does.
  std::optional<grpc::Status> PrepareEnd(const absl::Status& status) {
    absl::MutexLock lock(&mu_);
    if (finished_) return std::nullopt;
    finished_ = true;
    if (writing_ || starting_) {
      pending_finish_ = ToGrpcStatus(status);
      return std::nullopt;
    }
    return ToGrpcStatus(status);
  }

  void End(const absl::Status& status) {
    if (auto finish = PrepareEnd(status)) Finish(*finish);
  }

  void OnWriteDone(bool ok) override {
    std::optional<grpc::Status> finish;
    std::shared_ptr<bus::Stream> stream;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (finished_) {
        finish = std::move(pending_finish_);
        pending_finish_.reset();
      } else if (ok) {
        stream = stream_;  // attached before its first claim: never null here
      }
    }
    if (finish) {
      Finish(*finish);
    } else if (!ok) {
      End(absl::CancelledError("the client went away"));
    } else if (stream) {
      stream->OnSent();
    }
  }

  void OnCancel() override { End(absl::CancelledError("cancelled by the client")); }

  void OnDone() override {
    guard_->Detach();
    std::shared_ptr<bus::Stream> stream;
    {
      absl::MutexLock lock(&mu_);
      stream = std::move(stream_);
    }
    if (stream) stream->Close();
    delete this;
  }

 private:
  // Authenticates, takes a stream slot (held until OnDone), and attaches.
  absl::StatusOr<std::shared_ptr<bus::Stream>> Attach(bus::Bus* bus, const CallContext& cc,
                                                      const auth::Credentials& creds,
                                                      const bus::SubscribeParams& params) {
    ASSIGN_OR_RETURN(auth::Principal principal, cc.auth->Authenticate(creds));
    RETURN_IF_ERROR(AuthorizeSubscription(*bus, principal, auth::Scope::kSubscribe,
                                          params.subscription));
    ASSIGN_OR_RETURN(slot_, cc.limiter->AcquireStream(principal));
    return bus->Subscribe(principal.tenant, params, guard_);
  }

  void Start(bus::Bus* bus, const CallContext& cc, const auth::Credentials& creds,
             const bus::SubscribeParams& params) {
    auto stream = Attach(bus, cc, creds, params);
    std::optional<grpc::Status> finish;
    bool close_stream = false;
    {
      absl::MutexLock lock(&mu_);
      starting_ = false;
      if (stream.ok()) {
        stream_ = *stream;
        close_stream = finished_;
      } else if (!finished_) {
        finished_ = true;
        if (!writing_) {
          finish = ToGrpcStatus(stream.status());
        } else {
          pending_finish_ = ToGrpcStatus(stream.status());
        }
      }
      if (finished_ && !writing_ && pending_finish_) {
        finish = std::move(pending_finish_);
        pending_finish_.reset();
      }
    }
    // Claims start only now that the stream is attached: a batch's write
    // always finds stream_ set.
    if (close_stream) {
      (*stream)->Close();
    } else if (stream.ok()) {
      (*stream)->Start();
    }
    if (finish) Finish(*finish);
  }

  std::shared_ptr<SinkGuard> guard_;
  // Set by Attach() on the pool before the stream exists; freed in OnDone.
  std::unique_ptr<auth::Limiter::StreamSlot> slot_;
  absl::Mutex mu_;
  std::shared_ptr<bus::Stream> stream_ ABSL_GUARDED_BY(mu_);
  bool starting_ ABSL_GUARDED_BY(mu_) = true;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<grpc::Status> pending_finish_ ABSL_GUARDED_BY(mu_);
  v1::SubscribeResponse response_;
};

// The guard's lock covers only "is the reactor alive" and its state change;
// StartWrite and Finish run after it is released, because gRPC may run
// OnWriteDone or OnDone (which detaches under this lock) inline.
bool SinkGuard::Send(std::vector<model::Delivery> batch) {
  SubscribeReactor* reactor;
  {
    absl::MutexLock lock(&mu_);
    reactor = reactor_;
    if (reactor == nullptr || !reactor->PrepareSend(std::move(batch))) return false;
  }
  reactor->WritePrepared();
  return true;
}

void SinkGuard::End(const absl::Status& status) {
  SubscribeReactor* reactor;
  std::optional<grpc::Status> finish;
  {
    absl::MutexLock lock(&mu_);
    reactor = reactor_;
    if (reactor == nullptr) return;
    finish = reactor->PrepareEnd(status);
  }
  if (finish) reactor->Finish(*finish);
}

// One UploadPayload stream. Reads one request at a time; the next read
// starts only after the worker pool has written what the last one
// completed, so a fast client cannot fill pgbusd's memory (backpressure
// through HTTP/2 flow control). Ends with the handle, or deletes what was
// stored.
class UploadReactor final : public grpc::ServerReadReactor<v1::UploadPayloadRequest> {
 public:
  UploadReactor(bus::Bus* bus, const CallContext& cc, grpc::CallbackServerContext* ctx,
                v1::UploadPayloadResponse* resp)
      : bus_(bus),
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
    if (req_.data().size() > static_cast<size_t>(bus::kChunkSize)) {
      return Fail(absl::InvalidArgumentError(absl::StrCat(
          "data: at most ", bus::kChunkSize, " bytes per request; got ", req_.data().size())));
    }
    Submit([this, data = std::move(*req_.mutable_data())] {
      if (absl::Status st = Begin(); !st.ok()) return Fail(st);
      received_ += static_cast<int64_t>(data.size());
      if (principal_.quotas.max_message_bytes &&
          received_ > *principal_.quotas.max_message_bytes) {
        return Fail(absl::ResourceExhaustedError(
            absl::StrCat("payload exceeds the tenant quota max_message_bytes=",
                         *principal_.quotas.max_message_bytes, " after ", received_, " bytes")));
      }
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
    ASSIGN_OR_RETURN(upload_, bus_->BeginUpload(principal_.tenant, topic_, compressed_));
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

  bus::Bus* const bus_;
  const CallContext cc_;
  const auth::Credentials creds_;
  auth::Principal principal_;  // set by Begin()
  int64_t received_ = 0;
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

grpc::ServerUnaryReactor* BusService::Publish(grpc::CallbackServerContext* ctx,
                                              const v1::PublishRequest* req,
                                              v1::PublishResponse* resp) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  // Until the commit answers the call its payload is held up to four times:
  // the decoded request, the messages handed to the store, the statement's
  // array parameter and libpq's send buffer.
  std::shared_ptr<MemoryBudget::Reservation> memory =
      cc_.memory->TryReserve(4 * static_cast<int64_t>(req->ByteSizeLong()));
  if (!memory) {
    reactor->Finish(OutOfCallMemory(*cc_.memory));
    return reactor;
  }
  auth::Credentials creds = CredentialsOf(ctx);
  // A cached principal (the usual case) goes on at once on this thread:
  // validation and hashing are CPU work, and the commit happens on a
  // committer thread, which finishes the call. Otherwise the key is looked
  // up on the pool first.
  if (auto principal = cc_.auth->Cached(creds)) {
    absl::Status st = principal->ok() ? StartPublish(**principal, req, reactor, resp, memory)
                                      : principal->status();
    if (!st.ok()) reactor->Finish(ToGrpcStatus(st));
    return reactor;
  }
  if (!cc_.pool->Submit([this, creds = std::move(creds), req, reactor, resp, memory] {
        absl::StatusOr<auth::Principal> principal = cc_.auth->Authenticate(creds);
        absl::Status st = principal.ok() ? StartPublish(*principal, req, reactor, resp, memory)
                                         : principal.status();
        if (!st.ok()) reactor->Finish(ToGrpcStatus(st));
      })) {
    reactor->Finish(Overloaded());
  }
  return reactor;
}

absl::Status BusService::StartPublish(const auth::Principal& principal,
                                      const v1::PublishRequest* req,
                                      grpc::ServerUnaryReactor* reactor,
                                      v1::PublishResponse* resp,
                                      std::shared_ptr<MemoryBudget::Reservation> memory) {
  RETURN_IF_ERROR(principal.Check(auth::Scope::kPublish, req->topic()));
  std::vector<model::NewMessage> messages;
  messages.reserve(req->messages_size());
  for (int i = 0; i < req->messages_size(); ++i) {
    ASSIGN_OR_RETURN(model::NewMessage m, FromProto(i, req->messages(i)));
    if (principal.quotas.max_message_bytes &&
        static_cast<int64_t>(m.payload.size()) > *principal.quotas.max_message_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "messages[", i, "]: payload of ", m.payload.size(),
          " bytes exceeds the tenant quota max_message_bytes=",
          *principal.quotas.max_message_bytes));
    }
    messages.push_back(std::move(m));
  }
  RETURN_IF_ERROR(cc_.limiter->AdmitPublish(principal, req->messages_size()));
  bus_->Publish(principal.tenant, req->topic(), std::move(messages),
                [reactor, resp, memory](absl::StatusOr<std::vector<int64_t>> ids) {
                  if (ids.ok()) {
                    for (int64_t id : *ids) resp->add_message_ids(std::to_string(id));
                  }
                  reactor->Finish(ToGrpcStatus(ids.status()));
                });
  return absl::OkStatus();
}

grpc::ServerWriteReactor<v1::SubscribeResponse>* BusService::Subscribe(
    grpc::CallbackServerContext* ctx, const v1::SubscribeRequest* req) {
  return new SubscribeReactor(bus_, cc_, ctx, req);
}

grpc::ServerUnaryReactor* BusService::Ack(grpc::CallbackServerContext* ctx,
                                          const v1::AckRequest* req, v1::AckResponse* resp) {
  return RunOnPool(cc_, ctx, [this, req, resp](const auth::Principal& p) -> absl::Status {
    RETURN_IF_ERROR(AuthorizeSubscription(*bus_, p, auth::Scope::kSubscribe, req->subscription()));
    std::vector<std::string> ids(req->ack_ids().begin(), req->ack_ids().end());
    ASSIGN_OR_RETURN(bus::LeaseResults ok, bus_->Ack(p.tenant, req->subscription(), ids));
    FillResults(ids, ok, resp);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* BusService::ModifyAckDeadline(grpc::CallbackServerContext* ctx,
                                                        const v1::ModifyAckDeadlineRequest* req,
                                                        v1::ModifyAckDeadlineResponse* resp) {
  return RunOnPool(cc_, ctx, [this, req, resp](const auth::Principal& p) -> absl::Status {
    RETURN_IF_ERROR(AuthorizeSubscription(*bus_, p, auth::Scope::kSubscribe, req->subscription()));
    ASSIGN_OR_RETURN(absl::Duration deadline, FromProto("ack_deadline", req->ack_deadline()));
    std::vector<std::string> ids(req->ack_ids().begin(), req->ack_ids().end());
    ASSIGN_OR_RETURN(bus::LeaseResults ok,
                     bus_->ModifyAckDeadline(p.tenant, req->subscription(), ids, deadline,
                                             req->reason()));
    FillResults(ids, ok, resp);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* BusService::Retrieve(grpc::CallbackServerContext* ctx,
                                               const v1::RetrieveRequest* req,
                                               v1::RetrieveResponse* resp) {
  return RunOnPool(cc_, ctx, [this, req, resp](const auth::Principal& p) -> absl::Status {
    RETURN_IF_ERROR(p.CheckScope(auth::Scope::kSubscribe));
    ASSIGN_OR_RETURN(model::RetrieveResult r,
                     bus_->Retrieve(p.tenant, req->message_id(), req->offset(), req->length()));
    RETURN_IF_ERROR(p.Check(auth::Scope::kSubscribe, r.message.topic));
    r.message.payload_by_reference = true;
    ToProto(r.message, resp->mutable_message());
    resp->set_data(std::move(r.data));
    resp->set_offset(r.offset);
    return absl::OkStatus();
  });
}

grpc::ServerReadReactor<v1::UploadPayloadRequest>* BusService::UploadPayload(
    grpc::CallbackServerContext* ctx, v1::UploadPayloadResponse* resp) {
  return new UploadReactor(bus_, cc_, ctx, resp);
}

}  // namespace pgbus::api
