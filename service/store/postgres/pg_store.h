// The Postgres implementation of store::Store. See store.h for the contract
// and connection.h for how statements reach Postgres.
//
// Thread safety: safe from any thread; each call takes a pooled connection.
#ifndef PGBUS_SERVICE_STORE_POSTGRES_PG_STORE_H_
#define PGBUS_SERVICE_STORE_POSTGRES_PG_STORE_H_

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>

#include "service/obs/metrics.h"
#include "service/store/postgres/connection.h"
#include "service/store/store.h"

namespace pgbus::store::postgres {

struct PgStoreOptions {
  std::string dsn;
  int pool_size = 10;
  int statement_timeout_ms = 30000;
};

class PgStore : public Store, public Directory {
 public:
  // Connects once to check the database is reachable and migrated.
  // UNAVAILABLE when Postgres cannot be reached; FAILED_PRECONDITION when
  // the schema is missing or older than this binary.
  static absl::StatusOr<std::unique_ptr<PgStore>> Open(const PgStoreOptions& options);
  ~PgStore() override;

  absl::Status EnsureTenant(const std::string& tenant) override;
  absl::StatusOr<std::optional<ApiKeyRecord>> LookupApiKey(const std::string& key_id) override;
  absl::StatusOr<std::optional<TenantRecord>> LookupTenant(const std::string& tenant) override;
  absl::StatusOr<TopicRecord> CreateTopic(const std::string& tenant,
                                          const TopicRecord& topic) override;
  absl::StatusOr<TopicRecord> GetTopic(const std::string& tenant,
                                       const std::string& name) override;
  absl::StatusOr<std::vector<TopicRecord>> ListTopics(const std::string& tenant,
                                                      const std::string& after,
                                                      int limit) override;
  absl::Status DeleteTopic(const std::string& tenant, const std::string& name) override;
  absl::StatusOr<SubscriptionRecord> CreateSubscription(const std::string& tenant,
                                                        const SubscriptionRecord& sub) override;
  absl::StatusOr<SubscriptionRecord> GetSubscription(const std::string& tenant,
                                                     const std::string& name) override;
  absl::StatusOr<std::vector<SubscriptionRecord>> ListSubscriptions(
      const std::string& tenant, const std::string& topic, const std::string& after,
      int limit) override;
  absl::Status DeleteSubscription(const std::string& tenant, const std::string& name) override;
  std::vector<absl::StatusOr<std::vector<int64_t>>> PublishBatch(
      const std::vector<const PublishItem*>& items, const std::vector<LeaseOffer>& offers,
      std::vector<HandedOff>* handed) override;
  absl::StatusOr<std::vector<Delivery>> Claim(const std::string& tenant,
                                              const std::string& subscription, int64_t lease,
                                              int max_messages, int64_t max_bytes,
                                              bool first_may_exceed,
                                              absl::Duration ack_deadline) override;
  absl::StatusOr<std::vector<bool>> Ack(const std::string& tenant,
                                        const std::string& subscription,
                                        const std::vector<LeaseKey>& keys) override;
  absl::StatusOr<std::vector<bool>> ModifyAckDeadline(const std::string& tenant,
                                                      const std::string& subscription,
                                                      const std::vector<LeaseKey>& keys,
                                                      absl::Duration deadline,
                                                      const std::string& reason) override;
  absl::StatusOr<std::vector<bool>> ReleaseLeases(const std::string& tenant,
                                                  const std::string& subscription,
                                                  const std::string& topic,
                                                  const std::vector<LeaseKey>& keys) override;
  absl::StatusOr<std::vector<std::optional<absl::Time>>> HeldLeases(
      const std::string& tenant, const std::string& subscription,
      const std::vector<LeaseKey>& keys) override;
  absl::StatusOr<RetrieveResult> Retrieve(const std::string& tenant, int64_t id,
                                          int64_t offset, int64_t length) override;
  absl::StatusOr<NewPayload> CreatePayload(const std::string& tenant, const std::string& topic,
                                        int chunk_size, bool compressed) override;
  absl::Status WriteChunk(const std::string& tenant, int64_t payload_id, int seq,
                          const std::string& sha256, const std::string& bytes) override;
  absl::Status CompletePayload(const std::string& tenant, int64_t payload_id, int64_t size,
                               const std::string& sha256) override;
  absl::Status DeletePayload(const std::string& tenant, int64_t payload_id) override;
  absl::StatusOr<int> ReapExpired(int batch) override;
  absl::StatusOr<int> RefreshStatistics() override;
  absl::Status Seek(const std::string& tenant, const std::string& subscription,
                    absl::Time time) override;
  absl::StatusOr<StatsRecord> GetStats(const std::string& tenant, const std::string& topic,
                                       const std::string& subscription) override;
  absl::StatusOr<DeadLettered> DeadLetter(const std::string& tenant,
                                         const std::string& subscription, int limit) override;
  absl::StatusOr<std::vector<MessageRecord>> ListDeadLetters(const std::string& tenant,
                                                             const std::string& subscription,
                                                             int64_t after_id,
                                                             int limit) override;
  absl::StatusOr<std::vector<Republished>> RedriveDeadLetters(
      const std::string& tenant, const std::string& subscription,
      const std::vector<int64_t>& ids, int limit) override;
  absl::StatusOr<std::vector<MessageRecord>> ListMessages(const std::string& tenant,
                                                          const std::string& correlation_id,
                                                          int64_t after_id, int limit) override;
  absl::Status StartListening(
      std::function<void(const std::vector<TopicKey>&)> on_publish) override;
  void StopListening() override;

  // Whether Postgres answers, on a connection of its own (a pool busy with
  // work must not look like an outage): OK, or UNAVAILABLE. For readiness
  // checks; one caller at a time.
  absl::Status Ping();

  // Every subscription's backlog across tenants (at most `max_rows`), in
  // the form the metrics take it.
  absl::StatusOr<std::vector<obs::SubscriptionBacklog>> SubscriptionBacklog(int max_rows);

 private:
  explicit PgStore(const PgStoreOptions& options);
  // A transaction of one statement on a pooled connection: `scope` is the
  // tenant (or NoTenant{}), as Transaction takes it. Its rows outlive the
  // connection's return to the pool.
  template <typename Scope, typename... A>
  absl::StatusOr<Rows> RunOne(const Scope& scope, const char* statement, A&&... args) {
    absl::StatusOr<ConnectionPool::Lease> conn = pool_.Acquire();
    if (!conn.ok()) return conn.status();
    Transaction tx(**conn, scope);
    return tx.RunAndCommit(statement, std::forward<A>(args)...);
  }
  // Runs `create` ($1 name, then `args`; returning a row when it created
  // one) and `get` ($1 name) in one transaction and round trip: the rows of
  // `get`, which sees what `create` wrote; nothing when `create` created
  // nothing (a create that fails runs no get).
  template <typename... A>
  absl::StatusOr<std::optional<Rows>> CreateAndGet(const std::string& tenant,
                                                   const char* create, const char* get,
                                                   const std::string& name, A&&... args) {
    absl::StatusOr<ConnectionPool::Lease> conn = pool_.Acquire();
    if (!conn.ok()) return conn.status();
    Transaction tx(**conn, tenant);
    const size_t created = tx.Add(create, name, std::forward<A>(args)...);
    const size_t read = tx.Add(get, name);
    absl::StatusOr<std::vector<Rows>> res = tx.SendAndCommit();
    if (!res.ok()) return res.status();
    if ((*res)[created].empty() || (*res)[read].empty()) return std::nullopt;
    return std::move((*res)[read]);
  }
  // Publishes every item in one transaction; per-item NOT_FOUND for a
  // missing topic. A non-OK return means the transaction failed as a whole.
  // One group commit (PublishBatch). `handed` (null: no offers) gets what
  // the offers took; the caller clears it when this fails.
  absl::Status PublishTransaction(const std::vector<const PublishItem*>& items,
                                  const std::vector<LeaseOffer>& offers,
                                  std::vector<absl::StatusOr<std::vector<int64_t>>>* results,
                                  std::vector<HandedOff>* handed);
  // Locks the rows that hold `keys` (kLockLeases), then runs the lease
  // statement `statement` on them (kNack, kExtendLease or kReleaseLeases:
  // $1 the rows' ctids, then `params`) and reports which keys matched.
  // With `announce`, listeners are told the topic has messages when any
  // row changed, in the same transaction. (Ack locks and deletes in one
  // statement, kAck: see AckKeys.)
  absl::StatusOr<std::vector<bool>> ApplyToLeases(const char* statement,
                                                  const std::string& tenant,
                                                  const std::string& subscription,
                                                  const std::vector<LeaseKey>& keys,
                                                  std::vector<Value> params,
                                                  const TopicKey* announce = nullptr);
  // One transaction of Ack: kAck on `keys` (after kLockLeases when
  // `lock_first`) and whether the subscription exists, in one round trip;
  // which keys were acked.
  absl::StatusOr<std::vector<bool>> AckKeys(const std::string& tenant,
                                            const std::string& subscription,
                                            const std::vector<LeaseKey>& keys, bool lock_first);
  void ListenLoop(std::function<void(const std::vector<TopicKey>&)> on_publish);

  const PgStoreOptions options_;
  ConnectionPool pool_;
  std::atomic<bool> listening_{false};
  std::thread listener_;
  std::unique_ptr<Connection> ping_conn_;  // Ping()'s; reopened after a failure
};

}  // namespace pgbus::store::postgres

#endif  // PGBUS_SERVICE_STORE_POSTGRES_PG_STORE_H_
