// The reactor of one UploadPayload stream (callback API): stores a large
// payload chunk by chunk, with backpressure, and answers its handle.
#ifndef PGBUS_SERVICE_API_UPLOAD_REACTOR_H_
#define PGBUS_SERVICE_API_UPLOAD_REACTOR_H_

#include "pgbus/v1/bus.grpc.pb.h"
#include "service/api/call.h"
#include "service/bus/bus.h"

namespace pgbus::api {

// A reactor that deletes itself when the call is done.
grpc::ServerReadReactor<v1::UploadPayloadRequest>* NewUploadReactor(
    bus::Uploads* uploads, const CallContext& cc, grpc::CallbackServerContext* ctx,
    v1::UploadPayloadResponse* resp);

}  // namespace pgbus::api

#endif  // PGBUS_SERVICE_API_UPLOAD_REACTOR_H_
