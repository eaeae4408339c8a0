// The reactor of one Subscribe stream (callback API): feeds the stream's
// batches from the Dispatcher to the client, one write in flight.
#ifndef PGBUS_SERVICE_API_SUBSCRIBE_REACTOR_H_
#define PGBUS_SERVICE_API_SUBSCRIBE_REACTOR_H_

#include "pgbus/v1/bus.grpc.pb.h"
#include "service/api/call.h"
#include "service/bus/bus.h"

namespace pgbus::api {

// A reactor that deletes itself when the call is done.
grpc::ServerWriteReactor<v1::SubscribeResponse>* NewSubscribeReactor(
    bus::Bus* bus, const CallContext& cc, grpc::CallbackServerContext* ctx,
    const v1::SubscribeRequest* req);

}  // namespace pgbus::api

#endif  // PGBUS_SERVICE_API_SUBSCRIBE_REACTOR_H_
