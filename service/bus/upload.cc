#include "service/bus/upload.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "service/common/status_macros.h"

namespace pgbus::bus {

absl::Status ValidateUploadData(size_t bytes) {
  if (bytes <= static_cast<size_t>(kChunkSize)) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("data: at most ", kChunkSize, " bytes per request; got ", bytes));
}

absl::StatusOr<std::unique_ptr<Upload>> Upload::Begin(store::PayloadStore* store,
                                                      std::string tenant,
                                                      const std::string& topic,
                                                      int64_t max_bytes, bool compressed,
                                                      int64_t tenant_max_bytes) {
  ASSIGN_OR_RETURN(store::Store::NewPayload p,
                   store->CreatePayload(tenant, topic, kChunkSize, compressed));
  return std::unique_ptr<Upload>(new Upload(store, std::move(tenant), topic, p.id, max_bytes,
                                            p.topic_max_message_bytes, tenant_max_bytes));
}

absl::Status Upload::Append(absl::string_view data) {
  int64_t size = size_ + static_cast<int64_t>(data.size());
  if (size > max_bytes_) {
    Abort();
    return absl::InvalidArgumentError(absl::StrCat(
        "data: the payload exceeds this server's max_payload_bytes (", max_bytes_, ")"));
  }
  // Refused as soon as it passes the topic's limit, as Publish would refuse
  // it (RESOURCE_EXHAUSTED), rather than stored and left for the reaper.
  if (topic_max_bytes_ > 0 && size > topic_max_bytes_) {
    Abort();
    return absl::ResourceExhaustedError(absl::StrCat(
        "payload is more than ", topic_max_bytes_, " bytes; topic \"", topic_,
        "\" accepts at most ", topic_max_bytes_, " (max_message_bytes); nothing was stored"));
  }
  if (tenant_max_bytes_ > 0 && size > tenant_max_bytes_) {
    Abort();
    return absl::ResourceExhaustedError(absl::StrCat(
        "payload exceeds the tenant quota max_message_bytes=", tenant_max_bytes_, " after ",
        size, " bytes"));
  }
  hash_.Update(data);
  size_ += data.size();
  while (!data.empty()) {
    size_t take = std::min(data.size(), kChunkSize - buffer_.size());
    buffer_.append(data.data(), take);
    data.remove_prefix(take);
    if (buffer_.size() == static_cast<size_t>(kChunkSize)) RETURN_IF_ERROR(Flush());
  }
  return absl::OkStatus();
}

absl::Status Upload::Flush() {
  if (buffer_.empty()) return absl::OkStatus();
  RETURN_IF_ERROR(store_->WriteChunk(tenant_, id_, seq_, Sha256(buffer_), buffer_));
  ++seq_;
  buffer_.clear();
  return absl::OkStatus();
}

absl::StatusOr<Upload::Result> Upload::Finish(const std::string& client_sha256) {
  absl::Status st = Flush();
  Result result;
  result.size = size_;
  result.sha256 = hash_.Finish();
  if (st.ok() && !client_sha256.empty() && client_sha256 != result.sha256) {
    st = absl::DataLossError(absl::StrCat(
        "sha256 does not match the ", size_, " bytes received: the payload was corrupted in "
        "transit or the checksum is wrong; nothing was stored"));
  }
  if (st.ok()) st = store_->CompletePayload(tenant_, id_, size_, result.sha256);
  if (!st.ok()) {
    Abort();
    return st;
  }
  finished_ = true;
  result.handle = std::to_string(id_);
  return result;
}

void Upload::Abort() {
  if (finished_ || aborted_) return;
  aborted_ = true;
  buffer_.clear();
  (void)store_->DeletePayload(tenant_, id_);  // best effort; see the note on orphans
}

absl::StatusOr<int64_t> DecodePayloadHandle(absl::string_view handle) {
  int64_t v = 0;
  if (!absl::SimpleAtoi(handle, &v) || v <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "payload_handle: \"", handle.substr(0, 64),
        "\" is not a handle from UploadPayload; pass it unchanged"));
  }
  return v;
}

}  // namespace pgbus::bus
