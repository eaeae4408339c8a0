#include "service/bus/bus.h"

#include <functional>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "service/bus/ack_id.h"
#include "service/bus/filter.h"
#include "service/bus/validation.h"
#include "service/common/sha256.h"
#include "service/common/status_macros.h"
#include "service/obs/log.h"
#include "service/obs/metrics.h"

namespace pgbus::bus {
namespace {

constexpr int kDefaultPageSize = 100;
constexpr int kMaxPageSize = 1000;
constexpr int64_t kDefaultMaxOutstandingMessages = 1000;
constexpr int64_t kDefaultMaxOutstandingBytes = 100 << 20;
constexpr int64_t kMaxRetrieveBytes = 2 << 20;

absl::StatusOr<int> PageSize(const Page& page) {
  if (page.size < 0 || page.size > kMaxPageSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size: must be from 0 (default ", kDefaultPageSize, ") to ",
                     kMaxPageSize, "; got ", page.size));
  }
  return page.size == 0 ? kDefaultPageSize : page.size;
}

// Name-keyed listings: the token is the last name of the previous page.
absl::Status CheckNameToken(const std::string& token) {
  if (token.empty()) return absl::OkStatus();
  absl::Status st = ValidateName("page_token", token);
  if (!st.ok()) {
    return absl::InvalidArgumentError(
        "page_token: not a token from a previous response; pass next_page_token unchanged");
  }
  return absl::OkStatus();
}

// A page of messages in id order: the token is the last id of the page
// before; `fetch(after_id, limit)` reads one more than the page to know
// whether another follows.
absl::StatusOr<PageOf<model::MessageRecord>> MessagePage(
    const Page& page,
    const std::function<absl::StatusOr<std::vector<model::MessageRecord>>(int64_t, int)>& fetch) {
  ASSIGN_OR_RETURN(int size, PageSize(page));
  int64_t after = 0;
  if (!page.token.empty() && (!absl::SimpleAtoi(page.token, &after) || after < 0)) {
    return absl::InvalidArgumentError(
        "page_token: not a token from a previous response; pass next_page_token unchanged");
  }
  ASSIGN_OR_RETURN(auto messages, fetch(after, size + 1));
  std::string next;
  if (static_cast<int>(messages.size()) > size) {
    messages.resize(size);
    next = std::to_string(messages.back().id);
  }
  return PageOf<model::MessageRecord>{std::move(messages), next};
}

}  // namespace

Bus::Bus(store::Store* store, WorkerPool* pool, BusOptions options)
    : store_(store), options_(options) {
  dispatcher_ = std::make_unique<Dispatcher>(
      store, pool, Dispatcher::Options{options.poll_interval});
  publisher_ = std::make_unique<Publisher>(
      store, options.publish_committers, options.publish_max_batch,
      [this](const std::vector<model::TopicKey>& topics) { return dispatcher_->Offer(topics); },
      [this](const std::vector<model::TopicKey>& topics,
             const std::vector<model::LeaseOffer>& offers, std::vector<model::HandedOff> handed) {
        dispatcher_->Committed(topics, offers, std::move(handed));
      },
      static_cast<size_t>(options.max_queued_publishes));
}

Bus::~Bus() { Shutdown(); }

void Bus::Shutdown() {
  dispatcher_->Shutdown(absl::UnavailableError("server is shutting down; reconnect"));
  publisher_->Stop();
}

absl::StatusOr<model::TopicRecord> Bus::CreateTopic(const std::string& tenant,
                                                    model::TopicRecord topic) {
  RETURN_IF_ERROR(ValidateTopic(topic));
  auto created = store_->CreateTopic(tenant, topic);
  if (created.status().code() == absl::StatusCode::kAlreadyExists) {
    return absl::AlreadyExistsError(absl::StrCat("topic \"", topic.name, "\" already exists"));
  }
  if (created.ok()) obs::Info("topic_created", {{"tenant", tenant}, {"topic", topic.name}});
  return created;
}

absl::StatusOr<model::TopicRecord> Bus::GetTopic(const std::string& tenant,
                                                 const std::string& name) {
  RETURN_IF_ERROR(ValidateName("name", name));
  return store_->GetTopic(tenant, name);
}

absl::StatusOr<PageOf<model::TopicRecord>> Bus::ListTopics(
    const std::string& tenant, const Page& page) {
  ASSIGN_OR_RETURN(int size, PageSize(page));
  RETURN_IF_ERROR(CheckNameToken(page.token));
  ASSIGN_OR_RETURN(auto topics, store_->ListTopics(tenant, page.token, size + 1));
  std::string next;
  if (static_cast<int>(topics.size()) > size) {
    topics.resize(size);
    next = topics.back().name;
  }
  return PageOf<model::TopicRecord>{std::move(topics), next};
}

absl::Status Bus::DeleteTopic(const std::string& tenant, const std::string& name) {
  RETURN_IF_ERROR(ValidateName("name", name));
  RETURN_IF_ERROR(store_->DeleteTopic(tenant, name));
  obs::Info("topic_deleted", {{"tenant", tenant}, {"topic", name}});
  return absl::OkStatus();
}

absl::StatusOr<model::SubscriptionRecord> Bus::CreateSubscription(const std::string& tenant,
                                                                  model::SubscriptionRecord sub) {
  RETURN_IF_ERROR(ValidateSubscription(sub));
  ASSIGN_OR_RETURN(sub.filter_path, CompileFilter(sub.filter));
  if (!sub.dead_letter_topic.empty()) {
    auto dlq = store_->GetTopic(tenant, sub.dead_letter_topic);
    if (absl::IsNotFound(dlq.status())) {
      return absl::NotFoundError(absl::StrCat("subscription.dead_letter_topic: topic \"",
                                              sub.dead_letter_topic,
                                              "\" not found; create it first"));
    }
    RETURN_IF_ERROR(dlq.status());
  }
  auto created = store_->CreateSubscription(tenant, sub);
  if (created.status().code() == absl::StatusCode::kAlreadyExists) {
    return absl::AlreadyExistsError(
        absl::StrCat("subscription \"", sub.name, "\" already exists"));
  }
  if (created.ok()) {
    obs::Info("subscription_created",
              {{"tenant", tenant}, {"subscription", sub.name}, {"topic", sub.topic}});
  }
  return created;
}

absl::StatusOr<model::SubscriptionRecord> Bus::GetSubscription(const std::string& tenant,
                                                               const std::string& name) {
  RETURN_IF_ERROR(ValidateName("name", name));
  return store_->GetSubscription(tenant, name);
}

absl::StatusOr<PageOf<model::SubscriptionRecord>>
Bus::ListSubscriptions(const std::string& tenant, const std::string& topic, const Page& page) {
  ASSIGN_OR_RETURN(int size, PageSize(page));
  RETURN_IF_ERROR(CheckNameToken(page.token));
  if (!topic.empty()) RETURN_IF_ERROR(ValidateName("topic", topic));
  ASSIGN_OR_RETURN(auto subs, store_->ListSubscriptions(tenant, topic, page.token, size + 1));
  std::string next;
  if (static_cast<int>(subs.size()) > size) {
    subs.resize(size);
    next = subs.back().name;
  }
  return PageOf<model::SubscriptionRecord>{std::move(subs), next};
}

absl::Status Bus::DeleteSubscription(const std::string& tenant, const std::string& name) {
  RETURN_IF_ERROR(ValidateName("name", name));
  RETURN_IF_ERROR(store_->DeleteSubscription(tenant, name));
  obs::Info("subscription_deleted", {{"tenant", tenant}, {"subscription", name}});
  return absl::OkStatus();
}

void Bus::Publish(const std::string& tenant, const std::string& topic,
                  std::vector<model::NewMessage> messages, const TenantLimits& limits,
                  Publisher::Done done) {
  absl::Status st = ValidateName("topic", topic);
  if (st.ok() && messages.empty()) {
    st = absl::InvalidArgumentError("messages: at least one message is required");
  }
  if (st.ok() && messages.size() > static_cast<size_t>(kMaxMessagesPerPublish)) {
    st = absl::InvalidArgumentError(absl::StrCat("messages: at most ", kMaxMessagesPerPublish,
                                                 " per call; got ", messages.size()));
  }
  for (size_t i = 0; st.ok() && i < messages.size(); ++i) {
    model::NewMessage& m = messages[i];
    st = ValidateMessage(static_cast<int>(i), m, options_.inline_payload_limit);
    if (!st.ok()) break;
    if (limits.max_message_bytes &&
        static_cast<int64_t>(m.payload.size()) > *limits.max_message_bytes) {
      st = absl::ResourceExhaustedError(
          absl::StrCat("messages[", i, "]: payload of ", m.payload.size(),
                       " bytes exceeds the tenant quota max_message_bytes=",
                       *limits.max_message_bytes));
      break;
    }
    if (m.payload_id) continue;  // the upload was hashed on the way in
    std::string digest = Sha256(m.payload);
    if (!m.sha256.empty() && m.sha256 != digest) {
      st = absl::DataLossError(absl::StrCat(
          "messages[", i, "].sha256 does not match the payload received (", m.payload.size(),
          " bytes): the payload was corrupted in transit or the checksum is wrong; nothing "
          "was stored"));
      break;
    }
    m.sha256 = std::move(digest);
  }
  if (!st.ok()) {
    done(st);
    return;
  }
  publisher_->Publish(model::PublishItem{tenant, topic, std::move(messages)}, std::move(done));
}

absl::StatusOr<std::unique_ptr<Upload>> Bus::BeginUpload(const std::string& tenant,
                                                         const std::string& topic,
                                                         bool compressed,
                                                         const TenantLimits& limits) {
  RETURN_IF_ERROR(ValidateName("topic", topic));
  return Upload::Begin(store_, tenant, topic, options_.max_payload_bytes, compressed,
                       limits.max_message_bytes.value_or(0));
}

absl::StatusOr<std::shared_ptr<Stream>> Bus::Subscribe(const std::string& tenant,
                                                       const SubscribeParams& params,
                                                       std::shared_ptr<StreamSink> sink) {
  RETURN_IF_ERROR(ValidateName("subscription", params.subscription));
  if (params.max_outstanding_messages < 0) {
    return absl::InvalidArgumentError(
        "max_outstanding_messages: must not be negative (0: the default, 1000)");
  }
  if (params.max_outstanding_bytes < 0) {
    return absl::InvalidArgumentError(
        "max_outstanding_bytes: must not be negative (0: the default, 100 MiB)");
  }
  if (params.ack_deadline &&
      (*params.ack_deadline < absl::Seconds(1) || *params.ack_deadline > absl::Minutes(10))) {
    return absl::InvalidArgumentError("ack_deadline: must be from 1s to 10m when set");
  }
  ASSIGN_OR_RETURN(model::SubscriptionRecord sub,
                   store_->GetSubscription(tenant, params.subscription));
  StreamOptions options;
  options.tenant = tenant;
  options.subscription = sub.name;
  options.topic = sub.topic;
  options.max_outstanding_messages = params.max_outstanding_messages
                                         ? params.max_outstanding_messages
                                         : kDefaultMaxOutstandingMessages;
  options.max_outstanding_bytes =
      params.max_outstanding_bytes ? params.max_outstanding_bytes : kDefaultMaxOutstandingBytes;
  options.ack_deadline = params.ack_deadline.value_or(sub.ack_deadline);
  options.dead_letters = sub.max_delivery_attempts > 0;
  return dispatcher_->Open(std::move(options), std::move(sink));
}

absl::StatusOr<std::vector<model::LeaseKey>> Bus::DecodeAckIds(
    const std::vector<std::string>& ids) {
  if (ids.empty()) return absl::InvalidArgumentError("ack_ids: at least one is required");
  if (ids.size() > static_cast<size_t>(kMaxAckIds)) {
    return absl::InvalidArgumentError(
        absl::StrCat("ack_ids: at most ", kMaxAckIds, " per call; got ", ids.size()));
  }
  std::vector<model::LeaseKey> keys;
  keys.reserve(ids.size());
  for (const auto& id : ids) {
    ASSIGN_OR_RETURN(model::LeaseKey key, DecodeAckId(id));
    keys.push_back(key);
  }
  return keys;
}

namespace {
// Counts what a lease call did: `done` for the leases it changed (when
// given), expired for those it found gone.
void CountSettled(const LeaseResults& ok, void (*done)(int64_t)) {
  int64_t hit = 0;
  for (bool b : ok) hit += b ? 1 : 0;
  if (done != nullptr && hit > 0) done(hit);
  if (hit < static_cast<int64_t>(ok.size())) {
    obs::CountLeaseExpired(static_cast<int64_t>(ok.size()) - hit);
  }
}
}  // namespace

absl::StatusOr<LeaseResults> Bus::Ack(const std::string& tenant, const std::string& subscription,
                                      const std::vector<std::string>& ack_ids) {
  RETURN_IF_ERROR(ValidateName("subscription", subscription));
  ASSIGN_OR_RETURN(std::vector<model::LeaseKey> keys, DecodeAckIds(ack_ids));
  ASSIGN_OR_RETURN(LeaseResults ok, store_->Ack(tenant, subscription, keys));
  CountSettled(ok, obs::CountAcked);
  dispatcher_->LeasesChanged(keys, ok, std::nullopt);
  return ok;
}

absl::StatusOr<LeaseResults> Bus::ModifyAckDeadline(const std::string& tenant,
                                                    const std::string& subscription,
                                                    const std::vector<std::string>& ack_ids,
                                                    absl::Duration deadline,
                                                    const std::string& reason) {
  RETURN_IF_ERROR(ValidateName("subscription", subscription));
  if (deadline < absl::ZeroDuration() || deadline > absl::Minutes(10)) {
    return absl::InvalidArgumentError(
        "ack_deadline: must be from 0 (nack) to 10m");
  }
  if (reason.size() > kMaxNackReason || reason.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "reason: at most ", kMaxNackReason, " bytes, without NUL; got ", reason.size()));
  }
  if (!reason.empty() && deadline > absl::ZeroDuration()) {
    return absl::InvalidArgumentError("reason: only for a nack (ack_deadline 0)");
  }
  ASSIGN_OR_RETURN(std::vector<model::LeaseKey> keys, DecodeAckIds(ack_ids));
  absl::Time now = absl::Now();
  ASSIGN_OR_RETURN(LeaseResults ok, store_->ModifyAckDeadline(tenant, subscription, keys, deadline,
                                                                reason));
  std::optional<absl::Time> expiry;
  if (deadline > absl::ZeroDuration()) {
    expiry = now + deadline;
    CountSettled(ok, nullptr);  // extended: only lost leases count
  } else {
    CountSettled(ok, obs::CountNacked);
  }
  dispatcher_->LeasesChanged(keys, ok, expiry, /*ready_again=*/!expiry);
  return ok;
}

absl::StatusOr<model::RetrieveResult> Bus::Retrieve(const std::string& tenant,
                                                    const std::string& message_id,
                                                    int64_t offset, int64_t length) {
  ASSIGN_OR_RETURN(int64_t id, DecodeMessageId(message_id));
  if (offset < 0) return absl::InvalidArgumentError("offset: must not be negative");
  if (length < 0) return absl::InvalidArgumentError("length: must not be negative (0: to the end)");
  int64_t n = (length == 0 || length > kMaxRetrieveBytes) ? kMaxRetrieveBytes : length;
  return store_->Retrieve(tenant, id, offset, n);
}

absl::Status Bus::Seek(const std::string& tenant, const std::string& subscription,
                       absl::Time time) {
  RETURN_IF_ERROR(ValidateName("subscription", subscription));
  RETURN_IF_ERROR(store_->Seek(tenant, subscription, time));
  ASSIGN_OR_RETURN(model::SubscriptionRecord sub, store_->GetSubscription(tenant, subscription));
  dispatcher_->Wake({model::TopicKey{tenant, sub.topic}});
  return absl::OkStatus();
}

absl::StatusOr<Stats> Bus::GetStats(
    const std::string& tenant, const std::string& topic, const std::string& subscription) {
  if (topic.empty() == subscription.empty()) {
    return absl::InvalidArgumentError("set exactly one of topic and subscription");
  }
  RETURN_IF_ERROR(ValidateName(topic.empty() ? "subscription" : "topic",
                               topic.empty() ? subscription : topic));
  ASSIGN_OR_RETURN(model::StatsRecord stats, store_->GetStats(tenant, topic, subscription));
  int64_t streams = subscription.empty() ? 0 : dispatcher_->ActiveStreams(tenant, subscription);
  return Stats{stats, streams};
}

absl::StatusOr<PageOf<model::MessageRecord>> Bus::ListDeadLetters(
    const std::string& tenant, const std::string& subscription, const Page& page) {
  RETURN_IF_ERROR(ValidateName("subscription", subscription));
  return MessagePage(page, [&](int64_t after, int limit) {
    return store_->ListDeadLetters(tenant, subscription, after, limit);
  });
}

absl::StatusOr<std::vector<int64_t>> Bus::RedriveDeadLetters(
    const std::string& tenant, const std::string& subscription,
    const std::vector<std::string>& message_ids, int limit) {
  RETURN_IF_ERROR(ValidateName("subscription", subscription));
  if (limit < 0 || limit > 1000) {
    return absl::InvalidArgumentError(
        absl::StrCat("limit: must be from 0 (1000) to 1000; got ", limit));
  }
  if (message_ids.size() > 1000) {
    return absl::InvalidArgumentError(
        absl::StrCat("message_ids: at most 1000; got ", message_ids.size()));
  }
  std::vector<int64_t> ids;
  for (const auto& id : message_ids) {
    ASSIGN_OR_RETURN(int64_t v, DecodeMessageId(id));
    ids.push_back(v);
  }
  ASSIGN_OR_RETURN(auto redriven,
                   store_->RedriveDeadLetters(tenant, subscription, ids, limit ? limit : 1000));
  std::vector<int64_t> out;
  std::vector<model::TopicKey> woken;
  for (const auto& r : redriven) {
    out.push_back(r.id);
    woken.push_back({tenant, r.topic});
  }
  if (!woken.empty()) dispatcher_->Wake(woken);
  obs::Info("dead_letters_redriven", {{"tenant", tenant},
                                      {"subscription", subscription},
                                      {"count", std::to_string(out.size())}});
  return out;
}

absl::StatusOr<PageOf<model::MessageRecord>> Bus::ListMessages(
    const std::string& tenant, const std::string& correlation_id, const Page& page) {
  if (correlation_id.empty() || correlation_id.size() > kMaxKeyLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("correlation_id: must be 1 to ", kMaxKeyLength, " bytes"));
  }
  return MessagePage(page, [&](int64_t after, int limit) {
    return store_->ListMessages(tenant, correlation_id, after, limit);
  });
}

}  // namespace pgbus::bus
