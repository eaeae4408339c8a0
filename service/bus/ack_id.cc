#include "service/bus/ack_id.h"

#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace pgbus::bus {

std::string EncodeAckId(const model::LeaseKey& key) {
  return absl::StrCat(key.message_id, "-", key.attempt, "-",
                      absl::Hex(static_cast<uint64_t>(key.lease), absl::kZeroPad16));
}

absl::StatusOr<model::LeaseKey> DecodeAckId(absl::string_view ack_id) {
  std::vector<absl::string_view> parts = absl::StrSplit(ack_id, '-');
  model::LeaseKey key;
  uint64_t lease = 0;
  if (parts.size() != 3 || !absl::SimpleAtoi(parts[0], &key.message_id) ||
      !absl::SimpleAtoi(parts[1], &key.attempt) || parts[2].empty() || parts[2].size() > 16 ||
      !absl::SimpleHexAtoi(parts[2], &lease) || key.message_id <= 0 || key.attempt <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ack_ids: \"", ack_id.substr(0, 64),
        "\" is not an ack id; pass ReceivedMessage.ack_id unchanged"));
  }
  key.lease = static_cast<int64_t>(lease);
  return key;
}

absl::StatusOr<int64_t> DecodeMessageId(absl::string_view id) {
  int64_t v = 0;
  if (!absl::SimpleAtoi(id, &v) || v <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "message_id: \"", id.substr(0, 64), "\" is not a message id (decimal digits)"));
  }
  return v;
}

}  // namespace pgbus::bus
