#include "service/api/bus_service.h"

#include <memory>
#include <utility>

#include "service/api/convert.h"
#include "service/api/subscribe_reactor.h"
#include "service/api/upload_reactor.h"
#include "service/common/status_macros.h"

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
    messages.push_back(std::move(m));
  }
  RETURN_IF_ERROR(cc_.limiter->AdmitPublish(principal, req->messages_size()));
  bus_->Publish(principal.tenant, req->topic(), std::move(messages), LimitsOf(principal),
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
  return NewSubscribeReactor(bus_, cc_, ctx, req);
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
  return NewUploadReactor(bus_, cc_, ctx, resp);
}

}  // namespace pgbus::api
