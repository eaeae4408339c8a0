// Topics and subscriptions through a real pgbusd and Postgres.
#include <gtest/gtest.h>

#include "tests/support/harness.h"

namespace pgbus {
namespace {

using testing::Pgbusd;

TEST(Admin, CreateGetListDeleteTopic) {
  Pgbusd server;
  auto client = server.Connect();
  auto created = client->CreateTopic("orders.eu");
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(created->name(), "orders.eu");
  EXPECT_EQ(created->retention().seconds(), 7 * 24 * 3600);  // the documented default
  EXPECT_GT(created->create_time().seconds(), 0);

  grpc::ClientContext get_ctx;
  v1::GetTopicRequest get;
  get.set_name("orders.eu");
  v1::GetTopicResponse got;
  ASSERT_TRUE(client->admin().GetTopic(&get_ctx, get, &got).ok());
  EXPECT_EQ(got.topic().name(), "orders.eu");

  grpc::ClientContext del_ctx;
  v1::DeleteTopicRequest del;
  del.set_name("orders.eu");
  v1::DeleteTopicResponse deleted;
  ASSERT_TRUE(client->admin().DeleteTopic(&del_ctx, del, &deleted).ok());
  grpc::ClientContext again_ctx;
  EXPECT_EQ(client->admin().GetTopic(&again_ctx, get, &got).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST(Admin, DuplicateCreateIsAlreadyExists) {
  Pgbusd server;
  auto client = server.Connect();
  ASSERT_TRUE(client->CreateTopic("t").ok());
  auto dup = client->CreateTopic("t");
  EXPECT_EQ(dup.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_NE(dup.status().message().find("\"t\""), absl::string_view::npos) << dup.status();
  ASSERT_TRUE(client->CreateSubscription("s", "t").ok());
  EXPECT_EQ(client->CreateSubscription("s", "t").status().code(),
            absl::StatusCode::kAlreadyExists);
  // The name is taken, but the topic does not exist: that is what to fix,
  // and the existing subscription is not passed off as created.
  auto missing = client->CreateSubscription("s", "no-such-topic");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound) << missing.status();
  EXPECT_EQ(client->GetSubscription("s")->topic(), "t");
}

TEST(Admin, MalformedNamesAreInvalidAndCreateNothing) {
  Pgbusd server;
  auto client = server.Connect();
  ASSERT_TRUE(client->CreateTopic("good").ok());
  for (const std::string& bad : {std::string(""), std::string(201, 'a'), std::string("-x"),
                                std::string("a b"), std::string("a/b"), std::string("ü")}) {
    auto t = client->CreateTopic(bad);
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << "topic " << bad;
    EXPECT_NE(t.status().message().find("topic.name"), absl::string_view::npos) << t.status();
    auto s = client->CreateSubscription(bad, "good");
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << "subscription " << bad;
  }
  EXPECT_EQ(testing::CountAsOwner(server.tenant(), "SELECT 1 FROM pgbus.topics"), 1);
  EXPECT_EQ(testing::CountAsOwner(server.tenant(), "SELECT 1 FROM pgbus.subscriptions"), 0);
}

TEST(Admin, UnknownTopicOrSubscriptionIsNotFound) {
  Pgbusd server;
  auto client = server.Connect();
  auto sub = client->CreateSubscription("s", "no-such-topic");
  EXPECT_EQ(sub.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(sub.status().message().find("no-such-topic"), absl::string_view::npos);

  grpc::ClientContext ctx;
  v1::GetSubscriptionRequest get;
  get.set_name("nope");
  v1::GetSubscriptionResponse got;
  EXPECT_EQ(client->admin().GetSubscription(&ctx, get, &got).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST(Admin, OutOfRangeSettingsAreInvalid) {
  Pgbusd server;
  auto client = server.Connect();
  ASSERT_TRUE(client->CreateTopic("t").ok());
  grpc::ClientContext ctx;
  v1::CreateSubscriptionRequest req;
  req.mutable_subscription()->set_name("s");
  req.mutable_subscription()->set_topic("t");
  req.mutable_subscription()->mutable_ack_deadline()->set_seconds(3600);
  v1::CreateSubscriptionResponse resp;
  grpc::Status st = client->admin().CreateSubscription(&ctx, req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("ack_deadline"), std::string::npos) << st.error_message();
}

TEST(Admin, ListTopicsPagesInNameOrder) {
  Pgbusd server;
  auto client = server.Connect();
  for (const char* name : {"c", "a", "e", "b", "d"}) ASSERT_TRUE(client->CreateTopic(name).ok());
  std::vector<std::string> seen;
  std::string token;
  int pages = 0;
  do {
    grpc::ClientContext ctx;
    v1::ListTopicsRequest req;
    req.set_page_size(2);
    req.set_page_token(token);
    v1::ListTopicsResponse resp;
    ASSERT_TRUE(client->admin().ListTopics(&ctx, req, &resp).ok());
    for (const auto& t : resp.topics()) seen.push_back(t.name());
    token = resp.next_page_token();
    ++pages;
  } while (!token.empty());
  EXPECT_EQ(seen, (std::vector<std::string>{"a", "b", "c", "d", "e"}));
  EXPECT_EQ(pages, 3);

  grpc::ClientContext ctx;
  v1::ListTopicsRequest bad;
  bad.set_page_size(-1);
  v1::ListTopicsResponse resp;
  EXPECT_EQ(client->admin().ListTopics(&ctx, bad, &resp).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

}  // namespace
}  // namespace pgbus
