// PgStore (service/store/postgres/pg_store.h), in part:
// Payloads: ranged, checked reads and chunked uploads.
#include "service/store/postgres/pg_store.h"

#include "absl/strings/str_cat.h"
#include "service/common/sha256.h"
#include "service/common/status_macros.h"
#include "service/obs/log.h"
#include "service/store/postgres/pg_rows.h"
#include "service/store/postgres/sql.h"

namespace pgbus::store::postgres {

absl::StatusOr<RetrieveResult> PgStore::Retrieve(const std::string& tenant, int64_t id,
                                                 int64_t offset, int64_t length) {
  ASSIGN_OR_RETURN(ConnectionPool::Lease conn, pool_.Acquire());
  Transaction tx(*conn, tenant);
  ASSIGN_OR_RETURN(Rows found, tx.Run(sql::kRetrieve, id));
  if (found.empty()) {
    return absl::NotFoundError(absl::StrCat("message ", id, " not found (or expired)"));
  }
  RetrieveResult out;
  RowReader row = found[0];
  out.message = ReadMessage(row);
  const std::optional<std::string> inline_payload = row.Maybe(&RowReader::Bytes);
  const std::optional<int64_t> payload_id = row.Maybe(&RowReader::Int8);
  const std::optional<int32_t> chunk_size = row.Maybe(&RowReader::Int4);
  const int64_t size = out.message.size;
  if (offset > size) {
    return absl::OutOfRangeError(
        absl::StrCat("offset ", offset, " is past the payload's end (", size, " bytes)"));
  }
  out.offset = offset;
  const int64_t n = std::min(length, size - offset);
  if (!payload_id) {
    // Inline: verify the whole payload, then cut the range.
    const std::string payload = inline_payload.value_or("");
    if (Sha256(payload) != out.message.sha256) {
      obs::Error("payload_corrupt", {{"message", std::to_string(id)}});
      return absl::DataLossError(absl::StrCat(
          "message ", id, ": the stored payload does not match its SHA-256"));
    }
    out.data = payload.substr(offset, n);
    RETURN_IF_ERROR(tx.Commit());
    return out;
  }
  if (n == 0) {
    RETURN_IF_ERROR(tx.Commit());
    return out;
  }
  // Chunked: read only the chunks the range touches, each verified.
  const int64_t chunk = chunk_size.value_or(0);
  const int32_t first = static_cast<int32_t>(offset / chunk);
  const int32_t last = static_cast<int32_t>((offset + n - 1) / chunk);
  ASSIGN_OR_RETURN(Rows chunks, tx.RunAndCommit(sql::kReadChunks, *payload_id, first, last));
  if (chunks.size() != last - first + 1) {
    return absl::DataLossError(absl::StrCat("message ", id, ": payload chunks are missing"));
  }
  out.data.reserve(n);
  for (int r = 0; r < chunks.size(); ++r) {
    RowReader c = chunks[r];
    const int32_t seq = c.Int4();
    const std::string sha256 = c.Bytes();
    const absl::string_view bytes = c.BytesView();
    if (seq != first + r || Sha256(bytes) != sha256) {
      obs::Error("payload_corrupt",
                 {{"message", std::to_string(id)}, {"chunk", std::to_string(seq)}});
      return absl::DataLossError(absl::StrCat(
          "message ", id, ": stored chunk ", seq, " does not match its SHA-256"));
    }
    const int64_t chunk_start = static_cast<int64_t>(seq) * chunk;
    const int64_t from = std::max<int64_t>(offset, chunk_start) - chunk_start;
    const int64_t to =
        std::min<int64_t>(offset + n, chunk_start + static_cast<int64_t>(bytes.size())) -
        chunk_start;
    if (to > from) out.data.append(bytes.data() + from, to - from);
  }
  return out;
}

absl::StatusOr<Store::NewPayload> PgStore::CreatePayload(const std::string& tenant,
                                                        const std::string& topic,
                                                        int chunk_size, bool compressed) {
  ASSIGN_OR_RETURN(Rows r, RunOne(tenant, sql::kCreatePayload, topic, chunk_size, compressed));
  if (r.empty()) return TopicNotFound(topic);
  RowReader row = r[0];
  NewPayload out;
  out.id = row.Int8();
  out.topic_max_message_bytes = row.Int8();
  return out;
}

absl::Status PgStore::WriteChunk(const std::string& tenant, int64_t payload_id, int seq,
                                 const std::string& sha256, const std::string& bytes) {
  ASSIGN_OR_RETURN(Rows r, RunOne(tenant, sql::kWriteChunk, payload_id, seq,
                                  static_cast<int32_t>(bytes.size()), Bytea{sha256},
                                  Bytea{bytes}));
  if (r.empty()) return absl::FailedPreconditionError("the upload is not in progress");
  return absl::OkStatus();
}

absl::Status PgStore::CompletePayload(const std::string& tenant, int64_t payload_id,
                                      int64_t size, const std::string& sha256) {
  ASSIGN_OR_RETURN(Rows r, RunOne(tenant, sql::kCompletePayload, payload_id, size, Bytea{sha256}));
  if (r.empty()) return absl::FailedPreconditionError("the upload is not in progress");
  return absl::OkStatus();
}

absl::Status PgStore::DeletePayload(const std::string& tenant, int64_t payload_id) {
  return RunOne(tenant, sql::kDeletePayload, payload_id).status();
}

}  // namespace pgbus::store::postgres
