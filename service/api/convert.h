// Proto <-> domain translation. Malformed well-known types (a Duration with
// out-of-range nanos, say) are INVALID_ARGUMENT naming the field.
#ifndef PGBUS_SERVICE_API_CONVERT_H_
#define PGBUS_SERVICE_API_CONVERT_H_

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/timestamp.pb.h"
#include "pgbus/v1/types.pb.h"
#include "service/model/model.h"

namespace pgbus::api {

absl::StatusOr<absl::Duration> FromProto(absl::string_view field,
                                         const google::protobuf::Duration& d);
absl::StatusOr<absl::Time> FromProto(absl::string_view field,
                                     const google::protobuf::Timestamp& t);
void ToProto(absl::Duration d, google::protobuf::Duration* out);
void ToProto(absl::Time t, google::protobuf::Timestamp* out);

// Unset durations take the documented defaults.
absl::StatusOr<model::TopicRecord> FromProto(const v1::Topic& topic);
absl::StatusOr<model::SubscriptionRecord> FromProto(const v1::Subscription& sub);
absl::StatusOr<model::NewMessage> FromProto(int index, const v1::PublishMessage& message);

void ToProto(const model::TopicRecord& topic, v1::Topic* out);
void ToProto(const model::SubscriptionRecord& sub, v1::Subscription* out);
void ToProto(const model::MessageRecord& message, v1::Message* out);

}  // namespace pgbus::api

#endif  // PGBUS_SERVICE_API_CONVERT_H_
