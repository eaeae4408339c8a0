// PgStore (service/store/postgres/pg_store.h), in part:
// Payloads: ranged, checked reads and chunked uploads.
#include "service/store/postgres/pg_store.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/escaping.h"
#include "service/common/sha256.h"
#include "service/common/status_macros.h"
#include "service/obs/log.h"
#include "service/store/postgres/pg_rows.h"
#include "service/store/postgres/sql.h"

namespace pgbus::store::postgres {

absl::StatusOr<RetrieveResult> PgStore::Retrieve(const std::string& tenant, int64_t id,
                                                 int64_t offset, int64_t length) {
  RetrieveResult out;
  RETURN_IF_ERROR(InTenantTransaction(pool_, tenant, [&](pqxx::transaction_base&, Connection& conn) {
    RETURN_IF_ERROR(conn.PrepareRaw(sql::kRetrieveName, sql::kRetrieve, {kInt8}));
    std::string id_bin = EncodeInt8(id);
    ASSIGN_OR_RETURN(Result res, ExecRaw(conn, sql::kRetrieveName, {Param::Binary(id_bin)}));
    if (PQntuples(res.get()) == 0) {
      return absl::NotFoundError(absl::StrCat("message ", id, " not found (or expired)"));
    }
    BinaryRow row(res.get(), 0);
    out.message = ReadMessage(row);
    const int64_t size = out.message.size;
    if (offset > size) {
      return absl::OutOfRangeError(
          absl::StrCat("offset ", offset, " is past the payload's end (", size, " bytes)"));
    }
    out.offset = offset;
    const int64_t n = std::min(length, size - offset);
    if (row.IsNull(15)) {
      // Inline: verify the whole payload, then cut the range.
      std::string payload = row.IsNull(14) ? std::string() : row.Bytes(14);
      if (Sha256(payload) != out.message.sha256) {
        obs::Error("payload_corrupt", {{"message", std::to_string(id)}});
        return absl::DataLossError(absl::StrCat(
            "message ", id, ": the stored payload does not match its SHA-256"));
      }
      out.data = payload.substr(offset, n);
      return absl::OkStatus();
    }
    if (n == 0) return absl::OkStatus();
    // Chunked: read only the chunks the range touches, each verified.
    const int64_t chunk = row.Int4(16);
    const int64_t payload_id = row.Int8(15);
    const int32_t first = static_cast<int32_t>(offset / chunk);
    const int32_t last = static_cast<int32_t>((offset + n - 1) / chunk);
    RETURN_IF_ERROR(conn.PrepareRaw(sql::kReadChunksName, sql::kReadChunks, {kInt8, kInt4, kInt4}));
    std::string pid_bin = EncodeInt8(payload_id), first_bin = EncodeInt4(first),
                last_bin = EncodeInt4(last);
    ASSIGN_OR_RETURN(Result chunks, ExecRaw(conn, sql::kReadChunksName,
                                            {Param::Binary(pid_bin), Param::Binary(first_bin),
                                             Param::Binary(last_bin)}));
    if (PQntuples(chunks.get()) != last - first + 1) {
      return absl::DataLossError(absl::StrCat("message ", id, ": payload chunks are missing"));
    }
    out.data.reserve(n);
    for (int r = 0; r < PQntuples(chunks.get()); ++r) {
      BinaryRow c(chunks.get(), r);
      int32_t seq = c.Int4(0);
      const char* bytes = PQgetvalue(chunks.get(), r, 2);
      int len = PQgetlength(chunks.get(), r, 2);
      if (seq != first + r || Sha256(absl::string_view(bytes, len)) != c.Bytes(1)) {
        obs::Error("payload_corrupt",
                   {{"message", std::to_string(id)}, {"chunk", std::to_string(seq)}});
        return absl::DataLossError(absl::StrCat(
            "message ", id, ": stored chunk ", seq, " does not match its SHA-256"));
      }
      int64_t chunk_start = static_cast<int64_t>(seq) * chunk;
      int64_t from = std::max<int64_t>(offset, chunk_start) - chunk_start;
      int64_t to = std::min<int64_t>(offset + n, chunk_start + len) - chunk_start;
      if (to > from) out.data.append(bytes + from, to - from);
    }
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<Store::NewPayload> PgStore::CreatePayload(const std::string& tenant,
                                                        const std::string& topic,
                                                        int chunk_size, bool compressed) {
  NewPayload out;
  RETURN_IF_ERROR(InTenantTransaction(pool_, tenant, [&](pqxx::transaction_base& txn, Connection&) {
    pqxx::result r = txn.exec_params(sql::kCreatePayload, topic, chunk_size, compressed);
    if (r.empty()) return absl::NotFoundError(absl::StrCat("topic \"", topic, "\" not found"));
    out.id = r[0][0].as<int64_t>();
    out.topic_max_message_bytes = r[0][1].as<int64_t>();
    return absl::OkStatus();
  }));
  return out;
}

absl::Status PgStore::WriteChunk(const std::string& tenant, int64_t payload_id, int seq,
                                 const std::string& sha256, const std::string& bytes) {
  return InTenantTransaction(pool_, tenant, [&](pqxx::transaction_base&, Connection& conn) {
    RETURN_IF_ERROR(conn.PrepareRaw(sql::kWriteChunkName, sql::kWriteChunk,
                                    {kInt8, kInt4, kInt4, kBytea, kBytea}));
    std::string pid = EncodeInt8(payload_id), seq_bin = EncodeInt4(seq),
                size = EncodeInt4(static_cast<int32_t>(bytes.size()));
    ASSIGN_OR_RETURN(Result res, ExecRaw(conn, sql::kWriteChunkName,
                                         {Param::Binary(pid), Param::Binary(seq_bin),
                                          Param::Binary(size), Param::Binary(sha256),
                                          Param::Binary(bytes)}));
    if (PQntuples(res.get()) == 0) {
      return absl::FailedPreconditionError("the upload is not in progress");
    }
    return absl::OkStatus();
  });
}

absl::Status PgStore::CompletePayload(const std::string& tenant, int64_t payload_id,
                                      int64_t size, const std::string& sha256) {
  return InTenantTransaction(pool_, tenant, [&](pqxx::transaction_base& txn, Connection&) {
    if (txn.exec_params(sql::kCompletePayload, payload_id, size,
                        absl::BytesToHexString(sha256))
            .empty()) {
      return absl::FailedPreconditionError("the upload is not in progress");
    }
    return absl::OkStatus();
  });
}

absl::Status PgStore::DeletePayload(const std::string& tenant, int64_t payload_id) {
  return InTenantTransaction(pool_, tenant, [&](pqxx::transaction_base& txn, Connection&) {
    txn.exec_params(sql::kDeletePayload, payload_id);
    return absl::OkStatus();
  });
}

}  // namespace pgbus::store::postgres
