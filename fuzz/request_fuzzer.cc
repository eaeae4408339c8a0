// libFuzzer target over pgbus's request edge: protobuf decoding of every
// request a client sends, then the same conversion and validation the
// handlers run before anything reaches the database, plus the parsers of
// ack ids, message ids, API keys, subscription filters and topic patterns.
//
// Beyond "no crash, no hang, no sanitizer report", it checks what the edge
// promises: a refusal is INVALID_ARGUMENT (UNAUTHENTICATED for keys) with a
// message short enough never to echo a payload back, and what is accepted
// round-trips.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "pgbus/v1/admin.pb.h"
#include "pgbus/v1/bus.pb.h"
#include "service/api/convert.h"
#include "service/auth/api_key.h"
#include "service/bus/ack_id.h"
#include "service/bus/filter.h"
#include "service/bus/validation.h"
#include "service/common/topic_pattern.h"

namespace {

constexpr size_t kMaxErrorMessage = 600;
constexpr int64_t kInlineLimit = 256 * 1024;

void Fail(const char* what, const absl::Status& st) {
  std::fprintf(stderr, "request_fuzzer: %s: %s\n", what, st.ToString().c_str());
  std::abort();
}

// A refusal must be the expected code with a bounded message.
void CheckRefusal(const absl::Status& st, absl::StatusCode expected = absl::StatusCode::kInvalidArgument) {
  if (st.ok()) return;
  if (st.code() != expected) Fail("unexpected status code", st);
  if (st.message().size() > kMaxErrorMessage) Fail("error message too long", st);
}

template <typename T>
bool Parse(T* msg, const uint8_t* data, size_t size) {
  return msg->ParseFromArray(data, static_cast<int>(size));
}

void Publish(const uint8_t* data, size_t size) {
  pgbus::v1::PublishRequest req;
  if (!Parse(&req, data, size)) return;
  CheckRefusal(pgbus::bus::ValidateName("topic", req.topic()));
  for (int i = 0; i < req.messages_size(); ++i) {
    auto m = pgbus::api::FromProto(i, req.messages(i));
    CheckRefusal(m.status());
    if (m.ok()) CheckRefusal(pgbus::bus::ValidateMessage(i, *m, kInlineLimit));
  }
}

void Topic(const uint8_t* data, size_t size) {
  pgbus::v1::CreateTopicRequest req;
  if (!Parse(&req, data, size)) return;
  auto t = pgbus::api::FromProto(req.topic());
  CheckRefusal(t.status());
  if (t.ok()) CheckRefusal(pgbus::bus::ValidateTopic(*t));
}

void Subscription(const uint8_t* data, size_t size) {
  pgbus::v1::CreateSubscriptionRequest req;
  if (!Parse(&req, data, size)) return;
  auto s = pgbus::api::FromProto(req.subscription());
  CheckRefusal(s.status());
  if (s.ok()) CheckRefusal(pgbus::bus::ValidateSubscription(*s));
}

void Leases(const uint8_t* data, size_t size) {
  pgbus::v1::ModifyAckDeadlineRequest req;
  if (!Parse(&req, data, size)) return;
  CheckRefusal(pgbus::bus::ValidateName("subscription", req.subscription()));
  CheckRefusal(pgbus::api::FromProto("ack_deadline", req.ack_deadline()).status());
  for (const auto& id : req.ack_ids()) {
    auto key = pgbus::bus::DecodeAckId(id);
    CheckRefusal(key.status());
    if (key.ok()) {
      auto again = pgbus::bus::DecodeAckId(pgbus::bus::EncodeAckId(*key));
      if (!again.ok() || again->message_id != key->message_id ||
          again->attempt != key->attempt || again->lease != key->lease) {
        Fail("ack id does not round-trip", again.status());
      }
    }
  }
}

void Seek(const uint8_t* data, size_t size) {
  pgbus::v1::SeekRequest req;
  if (!Parse(&req, data, size)) return;
  CheckRefusal(pgbus::api::FromProto("time", req.time()).status());
  pgbus::v1::RetrieveRequest r;
  if (Parse(&r, data, size)) CheckRefusal(pgbus::bus::DecodeMessageId(r.message_id()).status());
}

void Text(const uint8_t* data, size_t size) {
  absl::string_view s(reinterpret_cast<const char*>(data), size);
  CheckRefusal(pgbus::auth::ParseKey(s).status(), absl::StatusCode::kUnauthenticated);
  CheckRefusal(pgbus::bus::CompileFilter(s).status());
  absl::Status pattern = pgbus::ValidateTopicPattern("topics", s);
  CheckRefusal(pattern);
  if (pattern.ok()) {
    // Every valid topic name matches `>`; a pattern without wildcards
    // matches exactly itself.
    bool wild = s.find('*') != absl::string_view::npos || s.find('>') != absl::string_view::npos;
    if (!wild && !pgbus::TopicMatches(s, s)) Fail("a plain pattern does not match itself", pattern);
    if (pgbus::bus::ValidateName("topic", s).ok() && !pgbus::TopicMatches(">", s)) {
      Fail("'>' does not match a topic", pattern);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t kind = data[0];
  ++data;
  --size;
  switch (kind % 6) {
    case 0: Publish(data, size); break;
    case 1: Topic(data, size); break;
    case 2: Subscription(data, size); break;
    case 3: Leases(data, size); break;
    case 4: Seek(data, size); break;
    default: Text(data, size); break;
  }
  return 0;
}
