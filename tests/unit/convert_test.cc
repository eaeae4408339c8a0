#include "service/api/convert.h"

#include <gtest/gtest.h>

#include "service/api/status_map.h"

namespace pgbus::api {
namespace {

TEST(Convert, RejectsMalformedDurations) {
  google::protobuf::Duration d;
  d.set_seconds(1);
  d.set_nanos(-5);  // signs differ
  EXPECT_EQ(FromProto("ttl", d).status().code(), absl::StatusCode::kInvalidArgument);
  d.set_seconds(0);
  d.set_nanos(1000000000);
  EXPECT_EQ(FromProto("ttl", d).status().code(), absl::StatusCode::kInvalidArgument);
  d.set_seconds(2);
  d.set_nanos(500000000);
  EXPECT_EQ(*FromProto("ttl", d), absl::Milliseconds(2500));
}

TEST(Convert, TimestampsRoundTripToTheMicrosecond) {
  absl::Time t = absl::FromUnixMicros(1795000000123456);
  google::protobuf::Timestamp ts;
  ToProto(t, &ts);
  EXPECT_EQ(*FromProto("time", ts), t);
  ts.set_nanos(-1);
  EXPECT_EQ(FromProto("time", ts).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Convert, PublishMessageChecksumMustBe32Bytes) {
  v1::PublishMessage m;
  m.set_sha256("short");
  auto r = FromProto(2, m);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("messages[2].sha256"), absl::string_view::npos);
}

TEST(ToGrpcStatus, KeepsCodeAndMessageButHidesInternalDetail) {
  grpc::Status nf = ToGrpcStatus(absl::NotFoundError("topic \"x\" not found"));
  EXPECT_EQ(nf.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(nf.error_message(), "topic \"x\" not found");
  EXPECT_EQ(ToGrpcStatus(absl::DataLossError("x")).error_code(), grpc::StatusCode::DATA_LOSS);
  grpc::Status internal = ToGrpcStatus(absl::InternalError("relation pgbus.secret at host=db"));
  EXPECT_EQ(internal.error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_EQ(internal.error_message().find("host="), std::string::npos);
}

}  // namespace
}  // namespace pgbus::api
