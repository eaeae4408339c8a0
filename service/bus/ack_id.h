// Ack ids: opaque to clients, "<message id>-<attempt>-<lease hex>" inside.
// The attempt and lease make an ack id valid for one delivery only.
#ifndef PGBUS_SERVICE_BUS_ACK_ID_H_
#define PGBUS_SERVICE_BUS_ACK_ID_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "service/model/model.h"

namespace pgbus::bus {

std::string EncodeAckId(const model::LeaseKey& key);
// INVALID_ARGUMENT when `ack_id` was not made by EncodeAckId.
absl::StatusOr<model::LeaseKey> DecodeAckId(absl::string_view ack_id);

// Message ids travel as decimal strings. INVALID_ARGUMENT otherwise.
absl::StatusOr<int64_t> DecodeMessageId(absl::string_view id);

}  // namespace pgbus::bus

#endif  // PGBUS_SERVICE_BUS_ACK_ID_H_
