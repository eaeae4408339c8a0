// The rules a request must follow, checked before anything touches the
// database. Each error is INVALID_ARGUMENT naming the field and the rule.
#ifndef PGBUS_SERVICE_BUS_VALIDATION_H_
#define PGBUS_SERVICE_BUS_VALIDATION_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "service/model/model.h"

namespace pgbus::bus {

inline constexpr size_t kMaxNameLength = 200;
inline constexpr int kMaxMessagesPerPublish = 1000;
inline constexpr int kMaxAckIds = 10000;
inline constexpr int kMaxAttributes = 64;
inline constexpr size_t kMaxAttributeKey = 256;
inline constexpr size_t kMaxAttributeValue = 1024;
inline constexpr size_t kMaxKeyLength = 256;  // correlation, ordering, idempotency
inline constexpr int32_t kMaxPriority = 1000;
inline constexpr size_t kMaxNackReason = 1024;

// Topic, subscription and tenant names: 1..200 characters of
// [A-Za-z0-9._-], the first a letter or digit.
absl::Status ValidateName(absl::string_view field, absl::string_view name);

// Topic settings (defaults already applied).
absl::Status ValidateTopic(const model::TopicRecord& topic);
absl::Status ValidateSubscription(const model::SubscriptionRecord& sub);

// One message of a Publish; `index` names it in errors. `max_payload` is the
// largest payload accepted inline.
absl::Status ValidateMessage(int index, const model::NewMessage& message, int64_t max_payload);

}  // namespace pgbus::bus

#endif  // PGBUS_SERVICE_BUS_VALIDATION_H_
