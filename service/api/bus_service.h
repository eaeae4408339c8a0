// pgbus.v1.BusService over the callback API: decode, validate, one bus::
// call, map the result.
#ifndef PGBUS_SERVICE_API_BUS_SERVICE_H_
#define PGBUS_SERVICE_API_BUS_SERVICE_H_

#include "pgbus/v1/bus.grpc.pb.h"
#include "service/api/call.h"
#include "service/bus/bus.h"

namespace pgbus::api {

class BusService final : public v1::BusService::CallbackService {
 public:
  BusService(bus::Bus* bus, CallContext cc) : bus_(bus), cc_(std::move(cc)) {}

  grpc::ServerUnaryReactor* Publish(grpc::CallbackServerContext* ctx,
                                    const v1::PublishRequest* req,
                                    v1::PublishResponse* resp) override;
  grpc::ServerWriteReactor<v1::SubscribeResponse>* Subscribe(
      grpc::CallbackServerContext* ctx, const v1::SubscribeRequest* req) override;
  grpc::ServerUnaryReactor* Ack(grpc::CallbackServerContext* ctx, const v1::AckRequest* req,
                                v1::AckResponse* resp) override;
  grpc::ServerUnaryReactor* ModifyAckDeadline(grpc::CallbackServerContext* ctx,
                                              const v1::ModifyAckDeadlineRequest* req,
                                              v1::ModifyAckDeadlineResponse* resp) override;
  grpc::ServerUnaryReactor* Retrieve(grpc::CallbackServerContext* ctx,
                                     const v1::RetrieveRequest* req,
                                     v1::RetrieveResponse* resp) override;
  grpc::ServerReadReactor<v1::UploadPayloadRequest>* UploadPayload(
      grpc::CallbackServerContext* ctx, v1::UploadPayloadResponse* resp) override;

 private:
  // Checks, validates and queues a Publish; a non-OK return is for the
  // caller to finish the call with, otherwise the commit finishes it.
  // `memory` (the call's share of max_call_memory_mb) is held until then.
  absl::Status StartPublish(const auth::Principal& principal, const v1::PublishRequest* req,
                            grpc::ServerUnaryReactor* reactor, v1::PublishResponse* resp,
                            std::shared_ptr<MemoryBudget::Reservation> memory);

  bus::Bus* const bus_;
  const CallContext cc_;
};

}  // namespace pgbus::api

#endif  // PGBUS_SERVICE_API_BUS_SERVICE_H_
