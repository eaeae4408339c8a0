#include "service/api/subscribe_reactor.h"

#include <memory>
#include <optional>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "service/api/convert.h"
#include "service/common/status_macros.h"

namespace pgbus::api {
namespace {

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
      rm->set_ack_id(std::move(d.ack_id));
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

}  // namespace

grpc::ServerWriteReactor<v1::SubscribeResponse>* NewSubscribeReactor(
    bus::Bus* bus, const CallContext& cc, grpc::CallbackServerContext* ctx,
    const v1::SubscribeRequest* req) {
  return new SubscribeReactor(bus, cc, ctx, req);
}

}  // namespace pgbus::api
