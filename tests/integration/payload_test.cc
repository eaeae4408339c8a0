// Large payloads through a real pgbusd: chunked upload, claim check,
// ranged and verified Retrieve, integrity failures, clean-up, isolation.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <fstream>
#include <random>
#include <sstream>

#include <pqxx/pqxx>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "service/common/sha256.h"
#include "tests/support/harness.h"

namespace pgbus {
namespace {

using testing::CountAsOwner;
using testing::Pgbusd;
using testing::RandomBytes;

constexpr int64_t kInline = 256 * 1024;
constexpr int64_t kChunk = 1 << 20;

int64_t Rows(const Pgbusd& server, const std::string& table) {
  return CountAsOwner(server.tenant(), "SELECT 1 FROM pgbus." + table);
}

absl::StatusOr<v1::UploadPayloadResponse> Upload(Client& client, const std::string& topic,
                                                 const std::string& data,
                                                 const std::string& sha = "") {
  grpc::ClientContext ctx;
  v1::UploadPayloadResponse resp;
  auto writer = client.bus().UploadPayload(&ctx, &resp);
  v1::UploadPayloadRequest req;
  req.set_topic(topic);
  req.set_sha256(sha);
  for (size_t off = 0; off < data.size() || off == 0; off += 700 * 1024) {
    req.set_data(data.substr(off, 700 * 1024));  // not aligned to chunks on purpose
    if (!writer->Write(req)) break;
    req.Clear();
    if (data.empty()) break;
  }
  writer->WritesDone();
  if (auto st = FromGrpcStatus(writer->Finish()); !st.ok()) return st;
  return resp;
}

absl::StatusOr<std::string> Range(Client& client, const std::string& id, int64_t offset,
                                  int64_t length) {
  grpc::ClientContext ctx;
  v1::RetrieveRequest req;
  req.set_message_id(id);
  req.set_offset(offset);
  req.set_length(length);
  v1::RetrieveResponse resp;
  if (auto st = FromGrpcStatus(client.bus().Retrieve(&ctx, req, &resp)); !st.ok()) return st;
  return resp.data();
}

class PayloadTest : public ::testing::Test {
 protected:
  PayloadTest() : client_(server_.Connect()) {
    EXPECT_TRUE(client_->CreateTopic("files").ok());
    EXPECT_TRUE(client_->CreateSubscription("s", "files").ok());
  }
  Pgbusd server_;
  std::unique_ptr<Client> client_;
};

TEST_F(PayloadTest, EverySizeRoundTripsBitForBit) {
  struct Case {
    const char* desc;
    int64_t size;
    bool by_reference;
  } cases[] = {
      {"empty", 0, false},
      {"one byte", 1, false},
      {"inline limit - 1", kInline - 1, false},
      {"inline limit", kInline, false},
      {"inline limit + 1 (uploaded)", kInline + 1, true},
      {"several chunks + 1 byte", 3 * kChunk + 1, true},
  };
  std::vector<std::string> ids;
  for (const auto& c : cases) {
    std::string data = RandomBytes(c.size, c.size);
    auto id = client_->PublishPayload("files", data, kInline);
    ASSERT_TRUE(id.ok()) << c.desc << ": " << id.status();
    auto back = client_->RetrievePayload(*id);
    ASSERT_TRUE(back.ok()) << c.desc << ": " << back.status();
    EXPECT_TRUE(*back == data) << c.desc << ": bytes differ";
    ids.push_back(*id);
  }
  // Subscribe carries small payloads inline and large ones by reference.
  auto sub = client_->Subscribe("s");
  auto got = testing::Receive(*sub, 6, absl::Seconds(10));
  ASSERT_EQ(got.size(), 6u);
  for (size_t i = 0; i < got.size(); ++i) {
    const auto& m = got[i].message();
    EXPECT_EQ(m.id(), ids[i]);
    EXPECT_EQ(m.size(), cases[i].size) << cases[i].desc;
    EXPECT_EQ(m.payload_by_reference(), cases[i].by_reference) << cases[i].desc;
    EXPECT_EQ(m.sha256(), Sha256(RandomBytes(cases[i].size, cases[i].size))) << cases[i].desc;
    if (cases[i].by_reference) {
      EXPECT_TRUE(m.payload().empty()) << cases[i].desc;
    }
  }
  // Chunks: 1 MiB each, per-chunk checksums stored.
  EXPECT_EQ(Rows(server_, "payload_chunks"), 1 + 4);
}

TEST_F(PayloadTest, RangesCrossChunkBoundaries) {
  std::string data = RandomBytes(3 * kChunk + 123, 7);
  auto id = client_->PublishPayload("files", data);
  ASSERT_TRUE(id.ok());
  for (auto [offset, length] : std::vector<std::pair<int64_t, int64_t>>{
           {0, 10}, {kChunk - 10, 20}, {kChunk - 1, 2 * kChunk}, {3 * kChunk, 123},
           {3 * kChunk + 100, 1000}, {static_cast<int64_t>(data.size()), 0}}) {
    auto r = Range(*client_, *id, offset, length);
    ASSERT_TRUE(r.ok()) << offset << "+" << length << ": " << r.status();
    EXPECT_TRUE(*r == data.substr(offset, length)) << offset << "+" << length;
  }
  // At most 2 MiB per call: the client asks again from where it got to.
  auto big = Range(*client_, *id, 0, 0);
  ASSERT_TRUE(big.ok());
  EXPECT_EQ(big->size(), 2u * kChunk);
  auto capped = Range(*client_, *id, 10, 2 * kChunk + 2);
  ASSERT_TRUE(capped.ok());
  EXPECT_TRUE(*capped == data.substr(10, 2 * kChunk));
  EXPECT_EQ(Range(*client_, *id, data.size() + 1, 0).status().code(),
            absl::StatusCode::kOutOfRange);
}

TEST_F(PayloadTest, ClientChecksumMismatchIsDataLossAndStoresNothing) {
  std::string data = RandomBytes(2 * kChunk + 5, 3);
  auto r = Upload(*client_, "files", data, Sha256("something else"));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
  EXPECT_EQ(Rows(server_, "payloads"), 0);
  EXPECT_EQ(Rows(server_, "payload_chunks"), 0);
  auto ok = Upload(*client_, "files", data, Sha256(data));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->size(), static_cast<int64_t>(data.size()));
  EXPECT_EQ(ok->sha256(), Sha256(data));
}

TEST_F(PayloadTest, CorruptionAtRestIsDataLossNotWrongBytes) {
  std::string large = RandomBytes(2 * kChunk + 10, 11);
  auto large_id = client_->PublishPayload("files", large);
  auto small_id = client_->PublishPayload("files", "small payload");
  ASSERT_TRUE(large_id.ok() && small_id.ok());
  {
    // As the owner (bound by RLS too): flip bytes of chunk 1 and of the
    // inline payload behind pgbus's back.
    pqxx::connection conn(testing::OwnerDsn());
    pqxx::work txn(conn);
    txn.exec_params("SELECT set_config('pgbus.tenant_id', $1, true)", server_.tenant());
    EXPECT_EQ(txn.exec("UPDATE pgbus.payload_chunks SET data = overlay(data placing "
                       "'\\xdeadbeef'::bytea from 100) WHERE seq = 1")
                  .affected_rows(),
              1u);
    EXPECT_EQ(txn.exec("UPDATE pgbus.messages SET payload = 'small pAyload' WHERE payload = "
                       "'small payload'")
                  .affected_rows(),
              1u);
    txn.commit();
  }
  EXPECT_EQ(Range(*client_, *large_id, kChunk + 5, 10).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(client_->RetrievePayload(*large_id).status().code(), absl::StatusCode::kDataLoss);
  auto untouched = Range(*client_, *large_id, 0, 1000);  // chunk 0 is intact
  ASSERT_TRUE(untouched.ok());
  EXPECT_TRUE(*untouched == large.substr(0, 1000));
  EXPECT_EQ(client_->RetrievePayload(*small_id).status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(PayloadTest, AnUploadThatBreaksOffLeavesNothing) {
  {
    grpc::ClientContext ctx;
    v1::UploadPayloadResponse resp;
    auto writer = client_->bus().UploadPayload(&ctx, &resp);
    v1::UploadPayloadRequest req;
    req.set_topic("files");
    std::string part = RandomBytes(kChunk, 5);
    for (int i = 0; i < 3; ++i) {
      req.set_data(part);
      ASSERT_TRUE(writer->Write(req));
    }
    for (int i = 0; i < 100 && Rows(server_, "payload_chunks") < 2; ++i) {
      absl::SleepFor(absl::Milliseconds(50));
    }
    EXPECT_GE(Rows(server_, "payload_chunks"), 2);  // chunks were really written
    ctx.TryCancel();
    (void)writer->Finish();
  }
  for (int i = 0; i < 100 && Rows(server_, "payloads") > 0; ++i) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_EQ(Rows(server_, "payloads"), 0);
  EXPECT_EQ(Rows(server_, "payload_chunks"), 0);
  EXPECT_EQ(Rows(server_, "messages"), 0);
}

// A topic's max_message_bytes refuses an upload as soon as it passes the
// limit, and what the upload wrote is deleted then, not left for the reaper.
TEST_F(PayloadTest, AnUploadPastTheTopicsLimitIsRefusedAndLeavesNothing) {
  v1::Topic capped;
  capped.set_name("capped");
  capped.set_max_message_bytes(2 * kChunk);
  ASSERT_TRUE(client_->CreateTopic(capped).ok());
  auto up = Upload(*client_, "capped", RandomBytes(3 * kChunk, 11));
  EXPECT_EQ(up.status().code(), absl::StatusCode::kResourceExhausted) << up.status();
  EXPECT_TRUE(absl::StrContains(up.status().message(), "max_message_bytes")) << up.status();
  EXPECT_TRUE(absl::StrContains(up.status().message(), "\"capped\"")) << up.status();
  EXPECT_EQ(Rows(server_, "payloads"), 0);
  EXPECT_EQ(Rows(server_, "payload_chunks"), 0);
  // Exactly the limit is accepted, and publishes.
  auto fits = Upload(*client_, "capped", RandomBytes(2 * kChunk, 12));
  ASSERT_TRUE(fits.ok()) << fits.status();
  v1::PublishMessage m;
  m.set_payload_handle(fits->payload_handle());
  EXPECT_TRUE(client_->Publish("capped", {m}).ok());
}

TEST_F(PayloadTest, HandlesArePublishedOnceToTheirOwnTopic) {
  ASSERT_TRUE(client_->CreateTopic("other").ok());
  std::string data = RandomBytes(kInline + 10, 1);
  std::istringstream in(data);
  auto up = client_->UploadPayload("files", in);
  ASSERT_TRUE(up.ok());
  auto publish = [&](const std::string& topic, const std::string& handle,
                     const std::string& payload = "") {
    v1::PublishMessage m;
    m.set_payload_handle(handle);
    m.set_payload(payload);
    return client_->Publish(topic, {m});
  };
  EXPECT_EQ(publish("other", up->payload_handle()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(publish("files", up->payload_handle(), "x").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(publish("files", "not-a-handle").status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(publish("files", up->payload_handle()).ok());
  auto again = publish("files", up->payload_handle());
  EXPECT_EQ(again.status().code(), absl::StatusCode::kInvalidArgument) << again.status();
  EXPECT_NE(again.status().message().find("payload_handle"), absl::string_view::npos);
  EXPECT_EQ(Rows(server_, "messages"), 1);
}

TEST_F(PayloadTest, AnotherTenantCannotRetrieveOrPublishIt) {
  auto id = client_->PublishPayload("files", RandomBytes(kInline * 2, 2));
  ASSERT_TRUE(id.ok());
  std::istringstream in(RandomBytes(kInline * 2, 3));
  auto up = client_->UploadPayload("files", in);
  ASSERT_TRUE(up.ok());
  Pgbusd other;
  auto b = other.Connect();
  EXPECT_EQ(b->RetrievePayload(*id).status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(b->CreateTopic("files").ok());
  v1::PublishMessage m;
  m.set_payload_handle(up->payload_handle());
  EXPECT_EQ(b->Publish("files", {m}).status().code(), absl::StatusCode::kInvalidArgument);
}

// Runs the pgbus CLI; returns (exit code, stdout and stderr).
std::pair<int, std::string> Cli(const std::string& target, const std::string& args) {
  auto r = testing::RunShell(std::string(PGBUS_CLI) + " --server " + target + " " + args);
  return {r.exit_code, r.out};
}

TEST_F(PayloadTest, CliPublishesAndRetrievesFilesAndFailsOnCorruption) {
  std::string dir = ::testing::TempDir();
  std::string in = dir + "/cli-in.bin", out = dir + "/cli-out.bin";
  std::string data = RandomBytes(5 * kChunk + 17, 99);
  std::ofstream(in, std::ios::binary) << data;
  auto [rc, published] = Cli(server_.target(), "publish --topic files --file " + in);
  ASSERT_EQ(rc, 0) << published;
  std::string id = published.substr(0, published.find('\t'));
  EXPECT_NE(published.find(absl::BytesToHexString(Sha256(data))), std::string::npos) << published;
  auto [rc2, retrieved] = Cli(server_.target(), "retrieve --id " + id + " --out " + out);
  ASSERT_EQ(rc2, 0) << retrieved;
  std::ifstream back(out, std::ios::binary);
  std::string got((std::istreambuf_iterator<char>(back)), std::istreambuf_iterator<char>());
  EXPECT_TRUE(got == data);
  EXPECT_NE(Cli(server_.target(), "topics").second.find("files"), std::string::npos);
  {
    pqxx::connection conn(testing::OwnerDsn());
    pqxx::work txn(conn);
    txn.exec_params("SELECT set_config('pgbus.tenant_id', $1, true)", server_.tenant());
    txn.exec("UPDATE pgbus.payload_chunks SET data = overlay(data placing '\\x00ff'::bytea "
             "from 7) WHERE seq = 4");
    txn.commit();
  }
  std::remove(out.c_str());
  auto [rc3, failed] = Cli(server_.target(), "retrieve --id " + id + " --out " + out);
  EXPECT_EQ(rc3, 3) << failed;  // DATA_LOSS
  EXPECT_NE(failed.find("DATA_LOSS"), std::string::npos) << failed;
  EXPECT_FALSE(std::ifstream(out).good()) << "a file that failed its check was left behind";
}

TEST_F(PayloadTest, CompressedPayloadsAreStoredWithoutRecompression) {
  std::string data = RandomBytes(kChunk + 1, 5);
  std::istringstream in(data);
  auto up = client_->UploadPayload("files", in, /*compressed=*/true);
  ASSERT_TRUE(up.ok()) << up.status();
  EXPECT_EQ(CountAsOwner(server_.tenant(),
                         "SELECT 1 FROM pgbus.payload_chunks WHERE data_raw IS NOT NULL"),
            2);
  v1::PublishMessage m;
  m.set_payload_handle(up->payload_handle());
  auto ids = client_->Publish("files", {m});
  ASSERT_TRUE(ids.ok());
  EXPECT_TRUE(*client_->RetrievePayload((*ids)[0]) == data);
}

TEST(Reaper, DeletesExpiredMessagesWithTheirDeliveriesAndChunksOnly) {
  Pgbusd server({"--reap-interval-ms", "100"});
  auto client = server.Connect();
  v1::Topic brief;
  brief.set_name("brief");
  brief.mutable_message_ttl()->set_seconds(1);
  ASSERT_TRUE(client->CreateTopic(brief).ok());
  ASSERT_TRUE(client->CreateTopic("lasting").ok());
  ASSERT_TRUE(client->CreateSubscription("s1", "brief").ok());
  ASSERT_TRUE(client->CreateSubscription("s2", "lasting").ok());
  ASSERT_TRUE(client->PublishPayload("brief", RandomBytes(2 * kChunk, 1)).ok());
  ASSERT_TRUE(client->Publish("brief", "small").ok());
  ASSERT_TRUE(client->PublishPayload("lasting", RandomBytes(kInline * 2, 2)).ok());
  ASSERT_TRUE(client->Publish("lasting", "stays").ok());
  EXPECT_EQ(Rows(server, "messages"), 4);
  EXPECT_EQ(Rows(server, "payload_chunks"), 3);
  for (int i = 0; i < 100 && Rows(server, "messages") > 2; ++i) {
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_EQ(Rows(server, "messages"), 2);        // the unexpired ones
  EXPECT_EQ(Rows(server, "deliveries"), 2);
  EXPECT_EQ(Rows(server, "payloads"), 1);
  EXPECT_EQ(Rows(server, "payload_chunks"), 1);
  EXPECT_EQ(CountAsOwner(server.tenant(),
                         "SELECT 1 FROM pgbus.messages WHERE topic = 'brief'"), 0);
}

// A deleted message's deliveries are found through the subscriptions that
// match its topic, patterns included (migration 0020): reaping and deleting
// a topic leave none behind, and take no other message's.
TEST(Reaper, TakesTheDeliveriesOfEverySubscriptionTheMessageWentTo) {
  Pgbusd server({"--reap-interval-ms", "100"});
  auto client = server.Connect();
  v1::Topic brief;
  brief.set_name("events.brief");
  brief.mutable_message_ttl()->set_seconds(1);
  ASSERT_TRUE(client->CreateTopic(brief).ok());
  ASSERT_TRUE(client->CreateTopic("events.lasting").ok());
  ASSERT_TRUE(client->CreateTopic("events.gone").ok());
  ASSERT_TRUE(client->CreateSubscription("exact", "events.brief").ok());
  ASSERT_TRUE(client->CreateSubscription("any", "events.*").ok());
  ASSERT_TRUE(client->Publish("events.brief", "expires").ok());
  ASSERT_TRUE(client->Publish("events.lasting", "stays").ok());
  ASSERT_TRUE(client->Publish("events.gone", "deleted").ok());
  EXPECT_EQ(Rows(server, "deliveries"), 4);  // exact: 1, any: 3
  ASSERT_TRUE(testing::DeleteTopic(*client, "events.gone").ok());
  EXPECT_EQ(Rows(server, "deliveries"), 3);
  for (int i = 0; i < 100 && Rows(server, "messages") > 1; ++i) {
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_EQ(Rows(server, "messages"), 1);
  EXPECT_EQ(Rows(server, "deliveries"), 1);
  EXPECT_EQ(CountAsOwner(server.tenant(),
                         "SELECT 1 FROM pgbus.deliveries d JOIN pgbus.messages m"
                         " ON m.tenant_id = d.tenant_id AND m.id = d.message_id"
                         " WHERE d.subscription = 'any' AND m.topic = 'events.lasting'"),
            1);
}

TEST(Reaper, TheAppRoleCanReapOnlyWhatExpired) {
  Pgbusd server({"--reap-interval-ms", "3600000"});  // no timer: call it by hand
  auto client = server.Connect();
  ASSERT_TRUE(client->CreateTopic("t").ok());
  auto fresh = client->Publish("t", "fresh");
  auto old = client->Publish("t", "old");
  ASSERT_TRUE(fresh.ok() && old.ok());
  {
    // "old" expired a second ago (set as the owner: no TTL is that short).
    pqxx::connection owner(testing::OwnerDsn());
    pqxx::work w(owner);
    w.exec_params("SELECT set_config('pgbus.tenant_id', $1, true)", server.tenant());
    w.exec_params("UPDATE pgbus.messages SET expires_at = now() - interval '1 second' "
                  "WHERE id = $1::bigint", *old);
    w.commit();
  }
  pqxx::connection conn(testing::AppDsn());
  pqxx::work txn(conn);
  txn.exec1("SELECT pgbus.reap_expired(1000000)");
  txn.commit();
  // The expired one is gone (with its delivery rows), the other stays.
  EXPECT_EQ(Rows(server, "messages"), 1);
  EXPECT_EQ(CountAsOwner(server.tenant(),
                         "SELECT 1 FROM pgbus.messages WHERE id = " + *fresh),
            1);
}

}  // namespace
}  // namespace pgbus
