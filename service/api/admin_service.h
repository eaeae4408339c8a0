// pgbus.v1.AdminService over the callback API.
#ifndef PGBUS_SERVICE_API_ADMIN_SERVICE_H_
#define PGBUS_SERVICE_API_ADMIN_SERVICE_H_

#include "pgbus/v1/admin.grpc.pb.h"
#include "service/api/call.h"
#include "service/bus/bus.h"

namespace pgbus::api {

class AdminService final : public v1::AdminService::CallbackService {
 public:
  AdminService(bus::Bus* bus, CallContext cc) : bus_(bus), cc_(std::move(cc)) {}

#define PGBUS_ADMIN_RPC(Name)                                                    \
  grpc::ServerUnaryReactor* Name(grpc::CallbackServerContext* ctx,               \
                                 const v1::Name##Request* req, v1::Name##Response* resp) override;
  PGBUS_ADMIN_RPC(CreateTopic)
  PGBUS_ADMIN_RPC(GetTopic)
  PGBUS_ADMIN_RPC(ListTopics)
  PGBUS_ADMIN_RPC(DeleteTopic)
  PGBUS_ADMIN_RPC(CreateSubscription)
  PGBUS_ADMIN_RPC(GetSubscription)
  PGBUS_ADMIN_RPC(ListSubscriptions)
  PGBUS_ADMIN_RPC(DeleteSubscription)
  PGBUS_ADMIN_RPC(Seek)
  PGBUS_ADMIN_RPC(GetStats)
  PGBUS_ADMIN_RPC(ListMessages)
  PGBUS_ADMIN_RPC(ListDeadLetters)
  PGBUS_ADMIN_RPC(RedriveDeadLetters)
#undef PGBUS_ADMIN_RPC

 private:
  bus::Bus* const bus_;
  const CallContext cc_;
};

}  // namespace pgbus::api

#endif  // PGBUS_SERVICE_API_ADMIN_SERVICE_H_
