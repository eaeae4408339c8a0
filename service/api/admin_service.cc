#include "service/api/admin_service.h"

#include "service/api/convert.h"
#include "service/auth/principal.h"
#include "service/common/status_macros.h"

namespace pgbus::api {

// Each handler: decode, one bus:: call on the worker pool, encode.
#define PGBUS_ADMIN_HANDLER(Name)                                                \
  grpc::ServerUnaryReactor* AdminService::Name(                                  \
      grpc::CallbackServerContext* ctx, const v1::Name##Request* req,            \
      v1::Name##Response* resp) {                                                \
    return RunOnPool(cc_, ctx, [this, req, resp](const auth::Principal& p) {     \
      return Do##Name(*bus_, p, *req, resp);                                     \
    });                                                                          \
  }

namespace {

using auth::Scope;

absl::Status DoCreateTopic(bus::Bus& bus, const auth::Principal& p,
                           const v1::CreateTopicRequest& req, v1::CreateTopicResponse* resp) {
  ASSIGN_OR_RETURN(model::TopicRecord topic, FromProto(req.topic()));
  RETURN_IF_ERROR(p.Check(Scope::kAdmin, topic.name));
  ASSIGN_OR_RETURN(model::TopicRecord created, bus.CreateTopic(p.tenant, std::move(topic)));
  ToProto(created, resp->mutable_topic());
  return absl::OkStatus();
}

absl::Status DoGetTopic(bus::Bus& bus, const auth::Principal& p, const v1::GetTopicRequest& req,
                        v1::GetTopicResponse* resp) {
  RETURN_IF_ERROR(p.Check(Scope::kAdmin, req.name()));
  ASSIGN_OR_RETURN(model::TopicRecord topic, bus.GetTopic(p.tenant, req.name()));
  ToProto(topic, resp->mutable_topic());
  return absl::OkStatus();
}

absl::Status DoListTopics(bus::Bus& bus, const auth::Principal& p,
                          const v1::ListTopicsRequest& req, v1::ListTopicsResponse* resp) {
  RETURN_IF_ERROR(p.CheckScope(Scope::kAdmin));
  ASSIGN_OR_RETURN(auto page,
                   bus.ListTopics(p.tenant, bus::Page{req.page_token(), req.page_size()}));
  for (const auto& t : page.items) {
    if (p.TopicAllowed(t.name)) ToProto(t, resp->add_topics());
  }
  resp->set_next_page_token(page.next_page_token);
  return absl::OkStatus();
}

absl::Status DoDeleteTopic(bus::Bus& bus, const auth::Principal& p,
                           const v1::DeleteTopicRequest& req, v1::DeleteTopicResponse*) {
  RETURN_IF_ERROR(p.Check(Scope::kAdmin, req.name()));
  return bus.DeleteTopic(p.tenant, req.name());
}

absl::Status DoCreateSubscription(bus::Bus& bus, const auth::Principal& p,
                                  const v1::CreateSubscriptionRequest& req,
                                  v1::CreateSubscriptionResponse* resp) {
  ASSIGN_OR_RETURN(model::SubscriptionRecord sub, FromProto(req.subscription()));
  RETURN_IF_ERROR(p.Check(Scope::kAdmin, sub.topic));
  ASSIGN_OR_RETURN(model::SubscriptionRecord created,
                   bus.CreateSubscription(p.tenant, std::move(sub)));
  ToProto(created, resp->mutable_subscription());
  return absl::OkStatus();
}

absl::Status DoGetSubscription(bus::Bus& bus, const auth::Principal& p,
                               const v1::GetSubscriptionRequest& req,
                               v1::GetSubscriptionResponse* resp) {
  RETURN_IF_ERROR(p.CheckScope(Scope::kAdmin));
  ASSIGN_OR_RETURN(model::SubscriptionRecord sub, bus.GetSubscription(p.tenant, req.name()));
  RETURN_IF_ERROR(p.Check(Scope::kAdmin, sub.topic));
  ToProto(sub, resp->mutable_subscription());
  return absl::OkStatus();
}

absl::Status DoListSubscriptions(bus::Bus& bus, const auth::Principal& p,
                                 const v1::ListSubscriptionsRequest& req,
                                 v1::ListSubscriptionsResponse* resp) {
  RETURN_IF_ERROR(p.CheckScope(Scope::kAdmin));
  if (!req.topic().empty()) RETURN_IF_ERROR(p.Check(Scope::kAdmin, req.topic()));
  ASSIGN_OR_RETURN(auto page, bus.ListSubscriptions(p.tenant, req.topic(),
                                                    bus::Page{req.page_token(), req.page_size()}));
  for (const auto& s : page.items) {
    if (p.TopicAllowed(s.topic)) ToProto(s, resp->add_subscriptions());
  }
  resp->set_next_page_token(page.next_page_token);
  return absl::OkStatus();
}

absl::Status DoDeleteSubscription(bus::Bus& bus, const auth::Principal& p,
                                  const v1::DeleteSubscriptionRequest& req,
                                  v1::DeleteSubscriptionResponse*) {
  RETURN_IF_ERROR(AuthorizeSubscription(bus, p, Scope::kAdmin, req.name()));
  return bus.DeleteSubscription(p.tenant, req.name());
}

absl::Status DoSeek(bus::Bus& bus, const auth::Principal& p, const v1::SeekRequest& req,
                    v1::SeekResponse*) {
  if (!req.has_time()) return absl::InvalidArgumentError("time: is required");
  ASSIGN_OR_RETURN(absl::Time time, FromProto("time", req.time()));
  RETURN_IF_ERROR(
      AuthorizeSubscription(bus, p, Scope::kSubscribe, req.subscription(), Scope::kAdmin));
  return bus.Seek(p.tenant, req.subscription(), time);
}

absl::Status DoGetStats(bus::Bus& bus, const auth::Principal& p, const v1::GetStatsRequest& req,
                        v1::GetStatsResponse* resp) {
  if (!p.HasScope(Scope::kAdmin)) RETURN_IF_ERROR(p.CheckScope(Scope::kSubscribe));
  if (!req.subscription().empty()) {
    RETURN_IF_ERROR(
        AuthorizeSubscription(bus, p, Scope::kSubscribe, req.subscription(), Scope::kAdmin));
  }
  if (!req.topic().empty()) {
    RETURN_IF_ERROR(p.CheckAny(Scope::kSubscribe, Scope::kAdmin, req.topic()));
  }
  ASSIGN_OR_RETURN(auto stats, bus.GetStats(p.tenant, req.topic(), req.subscription()));
  resp->set_messages(stats.counts.messages);
  resp->set_pending(stats.counts.pending);
  resp->set_in_flight(stats.counts.in_flight);
  resp->set_oldest_unacked_age_seconds(stats.counts.oldest_unacked_age_seconds);
  resp->set_active_streams(stats.active_streams);
  resp->set_dead_lettered(stats.counts.dead_lettered);
  resp->set_published(stats.counts.published);
  resp->set_acked(stats.counts.acked);
  return absl::OkStatus();
}

absl::Status DoListMessages(bus::Bus& bus, const auth::Principal& p,
                            const v1::ListMessagesRequest& req, v1::ListMessagesResponse* resp) {
  if (!p.HasScope(Scope::kAdmin)) RETURN_IF_ERROR(p.CheckScope(Scope::kSubscribe));
  ASSIGN_OR_RETURN(auto page, bus.ListMessages(p.tenant, req.correlation_id(),
                                               bus::Page{req.page_token(), req.page_size()}));
  // A key limited to some topics sees only their messages.
  for (const auto& m : page.items) {
    if (p.TopicAllowed(m.topic)) ToProto(m, resp->add_messages());
  }
  resp->set_next_page_token(page.next_page_token);
  return absl::OkStatus();
}

absl::Status DoListDeadLetters(bus::Bus& bus, const auth::Principal& p,
                               const v1::ListDeadLettersRequest& req,
                               v1::ListDeadLettersResponse* resp) {
  RETURN_IF_ERROR(
      AuthorizeSubscription(bus, p, Scope::kSubscribe, req.subscription(), Scope::kAdmin));
  ASSIGN_OR_RETURN(auto page, bus.ListDeadLetters(p.tenant, req.subscription(),
                                                  bus::Page{req.page_token(), req.page_size()}));
  for (const auto& m : page.items) ToProto(m, resp->add_messages());
  resp->set_next_page_token(page.next_page_token);
  return absl::OkStatus();
}

absl::Status DoRedriveDeadLetters(bus::Bus& bus, const auth::Principal& p,
                                  const v1::RedriveDeadLettersRequest& req,
                                  v1::RedriveDeadLettersResponse* resp) {
  RETURN_IF_ERROR(AuthorizeSubscription(bus, p, Scope::kAdmin, req.subscription()));
  std::vector<std::string> ids(req.message_ids().begin(), req.message_ids().end());
  ASSIGN_OR_RETURN(std::vector<int64_t> redriven,
                   bus.RedriveDeadLetters(p.tenant, req.subscription(), ids, req.limit()));
  for (int64_t id : redriven) resp->add_message_ids(std::to_string(id));
  return absl::OkStatus();
}

}  // namespace

PGBUS_ADMIN_HANDLER(CreateTopic)
PGBUS_ADMIN_HANDLER(GetTopic)
PGBUS_ADMIN_HANDLER(ListTopics)
PGBUS_ADMIN_HANDLER(DeleteTopic)
PGBUS_ADMIN_HANDLER(CreateSubscription)
PGBUS_ADMIN_HANDLER(GetSubscription)
PGBUS_ADMIN_HANDLER(ListSubscriptions)
PGBUS_ADMIN_HANDLER(DeleteSubscription)
PGBUS_ADMIN_HANDLER(Seek)
PGBUS_ADMIN_HANDLER(GetStats)
PGBUS_ADMIN_HANDLER(ListMessages)
PGBUS_ADMIN_HANDLER(ListDeadLetters)
PGBUS_ADMIN_HANDLER(RedriveDeadLetters)

}  // namespace pgbus::api
