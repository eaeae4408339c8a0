// PgStore (service/store/postgres/pg_store.h), in part:
// Publish notifications: the LISTEN connection and its thread.
#include "service/store/postgres/pg_store.h"

#include <chrono>
#include <utility>

#include "absl/strings/str_split.h"
#include "service/obs/log.h"
#include "service/store/postgres/pg_rows.h"

namespace pgbus::store::postgres {

namespace {

class PublishReceiver : public pqxx::notification_receiver {
 public:
  PublishReceiver(pqxx::connection_base& conn, ConnectionPool* pool,
                  std::function<void(const std::vector<TopicKey>&)> on_publish)
      : pqxx::notification_receiver(conn, kPublishChannel),
        pool_(pool),
        on_publish_(std::move(on_publish)) {}

  void operator()(const std::string& payload, int backend_pid) override {
    // Sent by this replica: it woke its own streams when it committed (see
    // the Bus's publish and the dispatcher), and claiming again for the echo
    // found nothing (at 1,000 msg/s, a third of all claims).
    if (pool_->IsOwnBackend(backend_pid)) return;
    std::vector<TopicKey> keys;
    for (absl::string_view line : absl::StrSplit(payload, '\n', absl::SkipEmpty())) {
      std::pair<std::string, std::string> kv = absl::StrSplit(line, absl::MaxSplits('\t', 1));
      keys.push_back(TopicKey{std::move(kv.first), std::move(kv.second)});
    }
    on_publish_(keys);  // empty: wake everything
  }

 private:
  ConnectionPool* const pool_;
  std::function<void(const std::vector<TopicKey>&)> on_publish_;
};

}  // namespace

absl::Status PgStore::StartListening(
    std::function<void(const std::vector<TopicKey>&)> on_publish) {
  if (listening_.exchange(true)) return absl::FailedPreconditionError("already listening");
  listener_ = std::thread([this, on_publish = std::move(on_publish)] { ListenLoop(on_publish); });
  return absl::OkStatus();
}

void PgStore::StopListening() {
  listening_ = false;
  if (listener_.joinable()) listener_.join();
}

void PgStore::ListenLoop(std::function<void(const std::vector<TopicKey>&)> on_publish) {
  bool first = true;
  while (listening_) {
    // A connection of the pool's, held while listening: the pool's size is
    // every connection pgbusd opens for work (the health ping's aside).
    absl::StatusOr<ConnectionPool::Lease> lease = pool_.Acquire();
    try {
      if (!lease.ok()) throw pqxx::broken_connection(std::string(lease.status().message()));
      Connection& conn = **lease;
      {
        PublishReceiver receiver(conn, &pool_, on_publish);
        conn.get_notifs();  // issues the LISTEN
        if (!first) {
          obs::Info("listen_reconnected");
          on_publish({});  // publishes may have been missed while away
        }
        first = false;
        while (listening_) conn.await_notification(0, 200000);
      }  // UNLISTEN: the connection goes back to the pool as any other
    } catch (const std::exception& e) {
      if (lease.ok()) (*lease)->broken = true;  // dropped, not reused
      obs::Warn("listen_failed", {{"error", StatusFromException(e, nullptr).ToString()}});
      first = false;
      for (int i = 0; i < 10 && listening_; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    }
  }
}

}  // namespace pgbus::store::postgres
