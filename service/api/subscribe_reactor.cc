#include "service/api/subscribe_reactor.h"

#include <memory>
#include <optional>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "service/api/convert.h"
#include "service/api/finish_gate.h"
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
// is deferred while a write or the start-up is in flight, and happens once
// (FinishGate).
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
      FinishNow(ToGrpcStatus(bad));
      return;
    }
    if (!cc.pool->Submit([this, bus, cc, creds = CredentialsOf(ctx), params] {
          Start(bus, cc, creds, params);
        })) {
      FinishNow(Overloaded());
    }
  }

  // Takes the batch for writing; false once the stream is finishing. A true
  // return pins the reactor (no Finish, so no OnDone) until the write
  // completes, so the caller may StartWrite() without holding any lock.
  bool PrepareSend(std::vector<model::Delivery> batch) {
    absl::MutexLock lock(&mu_);
    if (!gate_.StartWrite()) return false;
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

  // Ends the stream; returns the status to Finish() with now, or nothing
  // when a write or the start-up will finish it (or it already was). Only
  // the caller that gets a status calls Finish, so the reactor stays alive
  // until it does.
  std::optional<grpc::Status> PrepareEnd(const absl::Status& status) {
    absl::MutexLock lock(&mu_);
    return gate_.End(ToGrpcStatus(status));
  }

  void End(const absl::Status& status) {
    if (auto finish = PrepareEnd(status)) Finish(*finish);
  }

  // In the constructor, before the start-up was submitted: nothing else
  // can be running yet.
  void FinishNow(const grpc::Status& status) {
    std::optional<grpc::Status> finish;
    {
      absl::MutexLock lock(&mu_);
      finish = gate_.Started(status);
    }
    if (finish) Finish(*finish);
  }

  void OnWriteDone(bool ok) override {
    std::optional<grpc::Status> finish;
    std::shared_ptr<bus::Stream> stream;
    bool ending;
    {
      absl::MutexLock lock(&mu_);
      finish = gate_.WriteDone();
      ending = gate_.finished();
      // Attached before its first claim: never null here.
      if (!ending && ok) stream = stream_;
    }
    if (finish) {
      Finish(*finish);
    } else if (!ending && !ok) {
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
      std::optional<grpc::Status> failure;
      if (!stream.ok()) failure = ToGrpcStatus(stream.status());
      finish = gate_.Started(std::move(failure));
      if (stream.ok()) {
        stream_ = *stream;
        close_stream = gate_.finished();  // cancelled while starting
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
  FinishGate<grpc::Status> gate_ ABSL_GUARDED_BY(mu_);
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
