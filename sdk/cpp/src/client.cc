#include "pgbus/client.h"

#include <grpcpp/support/client_interceptor.h>
#include <openssl/evp.h>

#include <cstdlib>
#include <sstream>
#include <utility>

namespace pgbus {
namespace {

void ToDuration(absl::Duration d, google::protobuf::Duration* out) {
  int64_t s = absl::IDivDuration(d, absl::Seconds(1), &d);
  out->set_seconds(s);
  out->set_nanos(static_cast<int32_t>(absl::ToInt64Nanoseconds(d)));
}

std::string Sha256(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  return std::string(reinterpret_cast<char*>(md), len);
}

}  // namespace

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

Subscriber::Subscriber(v1::BusService::Stub* stub, v1::SubscribeRequest request) {
  reader_ = std::thread([this, stub, request = std::move(request)] { ReadLoop(stub, request); });
}

Subscriber::~Subscriber() {
  Cancel();
  if (reader_.joinable()) reader_.join();
}

void Subscriber::ReadLoop(v1::BusService::Stub* stub, v1::SubscribeRequest request) {
  std::unique_ptr<grpc::ClientReader<v1::SubscribeResponse>> reader =
      stub->Subscribe(&context_, request);
  v1::SubscribeResponse response;
  while (reader->Read(&response)) {
    absl::MutexLock lock(&mu_);
    for (auto& m : *response.mutable_messages()) queue_.push_back(std::move(m));
  }
  absl::Status st = FromGrpcStatus(reader->Finish());
  absl::MutexLock lock(&mu_);
  finished_ = st;
}

absl::StatusOr<std::optional<v1::ReceivedMessage>> Subscriber::Next(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !queue_.empty() || finished_.has_value();
  };
  mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
  if (!queue_.empty()) {
    v1::ReceivedMessage m = std::move(queue_.front());
    queue_.pop_front();
    return std::optional<v1::ReceivedMessage>(std::move(m));
  }
  if (finished_) {
    if (finished_->ok()) return absl::CancelledError("the stream ended");
    return *finished_;
  }
  return std::optional<v1::ReceivedMessage>();
}

void Subscriber::Cancel() { context_.TryCancel(); }

std::optional<absl::Status> Subscriber::Finished() {
  absl::MutexLock lock(&mu_);
  return finished_;
}

Client::Client(std::shared_ptr<grpc::Channel> channel, absl::Duration timeout)
    : channel_(std::move(channel)),
      timeout_(timeout),
      bus_(v1::BusService::NewStub(channel_)),
      admin_(v1::AdminService::NewStub(channel_)) {}

std::unique_ptr<grpc::ClientContext> Client::Context() const {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout_));
  return ctx;
}

namespace {

// Adds `authorization: Bearer <key>` to every call of the channel, also to
// calls made through the raw stubs.
class ApiKeyInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit ApiKeyInterceptor(const std::string* header) : header_(header) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->insert({"authorization", *header_});
    }
    methods->Proceed();
  }

 private:
  const std::string* header_;
};

// Hands out a shared factory's interceptors (the channel wants unique_ptrs).
class SharedFactory : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit SharedFactory(
      std::shared_ptr<grpc::experimental::ClientInterceptorFactoryInterface> factory)
      : factory_(std::move(factory)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo* info) override {
    return factory_->CreateClientInterceptor(info);
  }

 private:
  std::shared_ptr<grpc::experimental::ClientInterceptorFactoryInterface> factory_;
};

class ApiKeyInterceptorFactory : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit ApiKeyInterceptorFactory(const std::string& key) : header_("Bearer " + key) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo*) override {
    return new ApiKeyInterceptor(&header_);
  }

 private:
  const std::string header_;
};

}  // namespace

std::unique_ptr<Client> Client::Connect() {
  const char* server = std::getenv("PGBUS_SERVER");
  const char* key = std::getenv("PGBUS_API_KEY");
  ClientOptions options;
  if (key != nullptr) options.api_key = key;
  return Connect(server != nullptr && *server != '\0' ? server : "localhost:50051", options);
}

std::unique_ptr<Client> Client::Connect(const std::string& target) {
  return Connect(target, ClientOptions{});
}

std::unique_ptr<Client> Client::Connect(const std::string& target,
                                        const ClientOptions& options) {
  std::shared_ptr<grpc::ChannelCredentials> creds =
      options.credentials ? options.credentials : grpc::InsecureChannelCredentials();
  grpc::ChannelArguments args;
  if (!options.ssl_target_name.empty()) {
    args.SetSslTargetNameOverride(options.ssl_target_name);
  }
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> hooks;
  if (!options.api_key.empty()) {
    hooks.push_back(std::make_unique<ApiKeyInterceptorFactory>(options.api_key));
  }
  for (const auto& f : options.interceptors) hooks.push_back(std::make_unique<SharedFactory>(f));
  // A restarted replica is back in seconds: gRPC's default backoff reaches
  // 120 s, and a connection attempt may hang 20 s.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 5000);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 5000);
  if (options.own_connection) args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return std::make_unique<Client>(grpc::experimental::CreateCustomChannelWithInterceptors(
                                      target, creds, args, std::move(hooks)),
                                  options.timeout);
}

absl::StatusOr<v1::Topic> Client::CreateTopic(const std::string& name) {
  v1::Topic topic;
  topic.set_name(name);
  return CreateTopic(topic);
}

absl::StatusOr<v1::Topic> Client::CreateTopic(const v1::Topic& topic) {
  auto ctx = Context();
  v1::CreateTopicRequest req;
  *req.mutable_topic() = topic;
  v1::CreateTopicResponse resp;
  if (auto st = FromGrpcStatus(admin_->CreateTopic(ctx.get(), req, &resp)); !st.ok()) return st;
  return resp.topic();
}

absl::StatusOr<v1::Subscription> Client::CreateSubscription(const std::string& name,
                                                            const std::string& topic,
                                                            absl::Duration ack_deadline) {
  v1::Subscription subscription;
  subscription.set_name(name);
  subscription.set_topic(topic);
  if (ack_deadline > absl::ZeroDuration()) {
    ToDuration(ack_deadline, subscription.mutable_ack_deadline());
  }
  return CreateSubscription(subscription);
}

namespace {

// One unary call of a stub with `context`; the answer or the status.
template <typename Stub, typename Request, typename Response>
absl::StatusOr<Response> Unary(grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&,
                                                            Response*),
                               Stub* stub, const Request& request,
                               std::unique_ptr<grpc::ClientContext> context) {
  Response response;
  if (auto st = FromGrpcStatus((stub->*method)(context.get(), request, &response)); !st.ok()) {
    return st;
  }
  return response;
}

// Every item of every page: calls `method` (each call with a context from
// `context`) until the answer has no next page token.
template <typename Item, typename Stub, typename Request, typename Response,
          typename Items, typename Context>
absl::StatusOr<std::vector<Item>> Pages(grpc::Status (Stub::*method)(grpc::ClientContext*,
                                                                     const Request&, Response*),
                                        Stub* stub, Request request, Items items,
                                        Context context) {
  std::vector<Item> all;
  for (;;) {
    auto page = Unary(method, stub, request, context());
    if (!page.ok()) return page.status();
    for (const Item& item : items(*page)) all.push_back(item);
    if (page->next_page_token().empty()) return all;
    request.set_page_token(page->next_page_token());
  }
}

}  // namespace

absl::StatusOr<v1::Subscription> Client::CreateSubscription(const v1::Subscription& subscription) {
  v1::CreateSubscriptionRequest req;
  *req.mutable_subscription() = subscription;
  auto resp = Unary(&v1::AdminService::Stub::CreateSubscription, admin_.get(), req, Context());
  if (!resp.ok()) return resp.status();
  return resp->subscription();
}

absl::StatusOr<v1::Topic> Client::GetTopic(const std::string& name) {
  v1::GetTopicRequest req;
  req.set_name(name);
  auto resp = Unary(&v1::AdminService::Stub::GetTopic, admin_.get(), req, Context());
  if (!resp.ok()) return resp.status();
  return resp->topic();
}

absl::StatusOr<std::vector<v1::Topic>> Client::ListTopics(int32_t page_size) {
  v1::ListTopicsRequest req;
  req.set_page_size(page_size);
  return Pages<v1::Topic>(
      &v1::AdminService::Stub::ListTopics, admin_.get(), req,
      [](const v1::ListTopicsResponse& r) -> const auto& { return r.topics(); },
      [this] { return Context(); });
}

absl::Status Client::DeleteTopic(const std::string& name) {
  v1::DeleteTopicRequest req;
  req.set_name(name);
  return Unary(&v1::AdminService::Stub::DeleteTopic, admin_.get(), req, Context()).status();
}

absl::StatusOr<v1::Subscription> Client::GetSubscription(const std::string& name) {
  v1::GetSubscriptionRequest req;
  req.set_name(name);
  auto resp = Unary(&v1::AdminService::Stub::GetSubscription, admin_.get(), req, Context());
  if (!resp.ok()) return resp.status();
  return resp->subscription();
}

absl::StatusOr<std::vector<v1::Subscription>> Client::ListSubscriptions(const std::string& topic,
                                                                        int32_t page_size) {
  v1::ListSubscriptionsRequest req;
  req.set_topic(topic);
  req.set_page_size(page_size);
  return Pages<v1::Subscription>(
      &v1::AdminService::Stub::ListSubscriptions, admin_.get(), req,
      [](const v1::ListSubscriptionsResponse& r) -> const auto& { return r.subscriptions(); },
      [this] { return Context(); });
}

absl::Status Client::DeleteSubscription(const std::string& name) {
  v1::DeleteSubscriptionRequest req;
  req.set_name(name);
  return Unary(&v1::AdminService::Stub::DeleteSubscription, admin_.get(), req, Context())
      .status();
}

absl::Status Client::Seek(const std::string& subscription, absl::Time time) {
  v1::SeekRequest req;
  req.set_subscription(subscription);
  timespec ts = absl::ToTimespec(time);
  req.mutable_time()->set_seconds(ts.tv_sec);
  req.mutable_time()->set_nanos(static_cast<int32_t>(ts.tv_nsec));
  return Unary(&v1::AdminService::Stub::Seek, admin_.get(), req, Context()).status();
}

absl::StatusOr<v1::GetStatsResponse> Client::GetStats(const std::string& subscription,
                                                      const std::string& topic) {
  v1::GetStatsRequest req;
  req.set_subscription(subscription);
  req.set_topic(topic);
  return Unary(&v1::AdminService::Stub::GetStats, admin_.get(), req, Context());
}

absl::StatusOr<std::vector<v1::Message>> Client::ListMessages(const std::string& correlation_id,
                                                              int32_t page_size) {
  v1::ListMessagesRequest req;
  req.set_correlation_id(correlation_id);
  req.set_page_size(page_size);
  return Pages<v1::Message>(
      &v1::AdminService::Stub::ListMessages, admin_.get(), req,
      [](const v1::ListMessagesResponse& r) -> const auto& { return r.messages(); },
      [this] { return Context(); });
}

absl::StatusOr<std::vector<v1::Message>> Client::ListDeadLetters(const std::string& subscription,
                                                                 int32_t page_size) {
  v1::ListDeadLettersRequest req;
  req.set_subscription(subscription);
  req.set_page_size(page_size);
  return Pages<v1::Message>(
      &v1::AdminService::Stub::ListDeadLetters, admin_.get(), req,
      [](const v1::ListDeadLettersResponse& r) -> const auto& { return r.messages(); },
      [this] { return Context(); });
}

absl::StatusOr<std::vector<std::string>> Client::RedriveDeadLetters(
    const std::string& subscription, const std::vector<std::string>& message_ids,
    int32_t limit) {
  v1::RedriveDeadLettersRequest req;
  req.set_subscription(subscription);
  for (const auto& id : message_ids) req.add_message_ids(id);
  req.set_limit(limit);
  auto resp = Unary(&v1::AdminService::Stub::RedriveDeadLetters, admin_.get(), req, Context());
  if (!resp.ok()) return resp.status();
  return std::vector<std::string>(resp->message_ids().begin(), resp->message_ids().end());
}

absl::StatusOr<std::vector<std::string>> Client::Publish(const std::string& topic,
                                                         std::vector<v1::PublishMessage> messages) {
  auto ctx = Context();
  v1::PublishRequest req;
  req.set_topic(topic);
  for (auto& m : messages) *req.add_messages() = std::move(m);
  v1::PublishResponse resp;
  if (auto st = FromGrpcStatus(bus_->Publish(ctx.get(), req, &resp)); !st.ok()) return st;
  return std::vector<std::string>(resp.message_ids().begin(), resp.message_ids().end());
}

absl::StatusOr<std::string> Client::Publish(const std::string& topic, const std::string& payload) {
  v1::PublishMessage m;
  m.set_payload(payload);
  std::vector<v1::PublishMessage> one;
  one.push_back(std::move(m));
  auto ids = Publish(topic, std::move(one));
  if (!ids.ok()) return ids.status();
  return ids->at(0);
}

namespace {
template <typename Response>
std::vector<v1::AckStatus> Statuses(const Response& resp) {
  std::vector<v1::AckStatus> out;
  for (const auto& r : resp.results()) out.push_back(r.status());
  return out;
}
}  // namespace

absl::StatusOr<std::vector<v1::AckStatus>> Client::Ack(const std::string& subscription,
                                                       const std::vector<std::string>& ack_ids) {
  auto ctx = Context();
  v1::AckRequest req;
  req.set_subscription(subscription);
  for (const auto& id : ack_ids) req.add_ack_ids(id);
  v1::AckResponse resp;
  if (auto st = FromGrpcStatus(bus_->Ack(ctx.get(), req, &resp)); !st.ok()) return st;
  return Statuses(resp);
}

absl::StatusOr<std::vector<v1::AckStatus>> Client::ModifyAckDeadline(
    const std::string& subscription, const std::vector<std::string>& ack_ids,
    absl::Duration deadline, const std::string& reason) {
  auto ctx = Context();
  v1::ModifyAckDeadlineRequest req;
  req.set_subscription(subscription);
  for (const auto& id : ack_ids) req.add_ack_ids(id);
  ToDuration(deadline, req.mutable_ack_deadline());
  req.set_reason(reason);
  v1::ModifyAckDeadlineResponse resp;
  if (auto st = FromGrpcStatus(bus_->ModifyAckDeadline(ctx.get(), req, &resp)); !st.ok()) return st;
  return Statuses(resp);
}

absl::StatusOr<v1::UploadPayloadResponse> Client::UploadPayload(const std::string& topic,
                                                                std::istream& in,
                                                                bool compressed,
                                                                const Progress& progress) {
  // The SHA-256 is computed while the bytes stream out and sent in a last
  // request: the server compares it with its own and keeps nothing on a
  // mismatch (DATA_LOSS).
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> hash(EVP_MD_CTX_new(),
                                                               &EVP_MD_CTX_free);
  EVP_DigestInit_ex(hash.get(), EVP_sha256(), nullptr);
  grpc::ClientContext ctx;
  v1::UploadPayloadResponse resp;
  auto writer = bus_->UploadPayload(&ctx, &resp);
  std::string buffer(1 << 20, '\0');
  v1::UploadPayloadRequest req;
  req.set_topic(topic);
  req.set_compressed(compressed);
  int64_t sent = 0;
  bool open = true;
  while (open && in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    std::streamsize n = in.gcount();
    if (n <= 0) break;
    EVP_DigestUpdate(hash.get(), buffer.data(), static_cast<size_t>(n));
    req.set_data(buffer.data(), static_cast<size_t>(n));
    open = writer->Write(req);  // false: the server ended the call; Finish says why
    sent += n;
    if (progress) progress(sent, -1);
    req.Clear();
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(hash.get(), md, &len);
  std::string digest(reinterpret_cast<char*>(md), len);
  if (open) {
    req.set_topic(topic);  // harmless when not first; needed for an empty payload
    req.set_sha256(digest);
    writer->Write(req);
  }
  writer->WritesDone();
  if (auto st = FromGrpcStatus(writer->Finish()); !st.ok()) return st;
  if (resp.sha256() != digest) {
    return absl::DataLossError("the server's SHA-256 of the upload does not match the data sent");
  }
  return resp;
}

absl::StatusOr<std::string> Client::PublishPayload(const std::string& topic,
                                                   const std::string& data,
                                                   int64_t inline_limit) {
  v1::PublishMessage m;
  if (static_cast<int64_t>(data.size()) <= inline_limit) {
    m.set_payload(data);
    m.set_sha256(Sha256(data));
  } else {
    std::istringstream in(data);
    auto uploaded = UploadPayload(topic, in);  // checksummed end to end
    if (!uploaded.ok()) return uploaded.status();
    m.set_payload_handle(uploaded->payload_handle());
  }
  std::vector<v1::PublishMessage> one;
  one.push_back(std::move(m));
  auto ids = Publish(topic, std::move(one));
  if (!ids.ok()) return ids.status();
  return ids->at(0);
}

absl::StatusOr<int64_t> Client::RetrievePayloadTo(const std::string& message_id,
                                                  std::ostream& out,
                                                  const Progress& progress) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> hash(EVP_MD_CTX_new(),
                                                               &EVP_MD_CTX_free);
  EVP_DigestInit_ex(hash.get(), EVP_sha256(), nullptr);
  int64_t done = 0, size = -1;
  std::string expected_sha;
  do {
    auto ctx = Context();
    v1::RetrieveRequest req;
    req.set_message_id(message_id);
    req.set_offset(done);
    v1::RetrieveResponse resp;
    if (auto st = FromGrpcStatus(bus_->Retrieve(ctx.get(), req, &resp)); !st.ok()) return st;
    size = resp.message().size();
    expected_sha = resp.message().sha256();
    if (resp.data().empty() && done < size) {
      return absl::DataLossError("Retrieve returned no bytes before the payload's end");
    }
    EVP_DigestUpdate(hash.get(), resp.data().data(), resp.data().size());
    out.write(resp.data().data(), static_cast<std::streamsize>(resp.data().size()));
    done += static_cast<int64_t>(resp.data().size());
    if (progress) progress(done, size);
  } while (done < size);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(hash.get(), md, &len);
  if (std::string(reinterpret_cast<char*>(md), len) != expected_sha) {
    return absl::DataLossError("payload does not match its SHA-256");
  }
  if (!out) return absl::DataLossError("could not write the payload out");
  return done;
}

absl::StatusOr<std::string> Client::RetrievePayload(const std::string& message_id) {
  std::ostringstream out;
  auto n = RetrievePayloadTo(message_id, out);
  if (!n.ok()) return n.status();
  return std::move(out).str();
}

std::unique_ptr<Subscriber> Client::Subscribe(v1::SubscribeRequest request) {
  return std::unique_ptr<Subscriber>(new Subscriber(bus_.get(), std::move(request)));
}

std::unique_ptr<Subscriber> Client::Subscribe(const std::string& subscription) {
  v1::SubscribeRequest req;
  req.set_subscription(subscription);
  return Subscribe(std::move(req));
}

}  // namespace pgbus
