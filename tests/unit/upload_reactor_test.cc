// The UploadPayload reactor's ways to end (issue 13), over an in-process
// gRPC channel and a fake payload store: the handle after the last chunk;
// INVALID_ARGUMENT, NOT_FOUND, DATA_LOSS, CANCELLED and UNAVAILABLE (no
// memory for the call, a full worker pool), each with whatever was stored deleted (on the worker pool,
// never on a gRPC thread) or nothing created. Each wait is for the event
// that proves the outcome (the store's call), with a deadline only as a
// guard. (Against Postgres: payload_test.)
#include "service/api/upload_reactor.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "service/auth/authenticator.h"
#include "service/bus/upload.h"
#include "service/common/memory_budget.h"
#include "service/common/sha256.h"
#include "service/common/worker_pool.h"

namespace pgbus::api {
namespace {

// Records the payload calls; everything else is not for uploads.
class FakePayloadStore : public store::PayloadStore {
 public:
  absl::StatusOr<model::RetrieveResult> Retrieve(const std::string&, int64_t, int64_t,
                                          int64_t) override {
    return absl::UnimplementedError("not for uploads");
  }
  absl::StatusOr<NewPayload> CreatePayload(const std::string&, const std::string& topic, int,
                                           bool) override {
    absl::MutexLock lock(&mu_);
    if (topic != "files") return absl::NotFoundError("topic not found: " + topic);
    ++created_;
    return NewPayload{7, 0};
  }
  absl::Status WriteChunk(const std::string&, int64_t, int, const std::string&,
                          const std::string& bytes) override {
    absl::MutexLock lock(&mu_);
    stored_bytes_ += bytes.size();
    return absl::OkStatus();
  }
  absl::Status CompletePayload(const std::string&, int64_t, int64_t, const std::string&) override {
    absl::MutexLock lock(&mu_);
    ++completed_;
    return absl::OkStatus();
  }
  absl::Status DeletePayload(const std::string&, int64_t) override {
    absl::MutexLock lock(&mu_);
    ++deleted_;
    return absl::OkStatus();
  }

  int created() { return Read(created_); }
  int completed() { return Read(completed_); }
  int deleted() { return Read(deleted_); }
  size_t stored_bytes() {
    absl::MutexLock lock(&mu_);
    return stored_bytes_;
  }
  // Waits until `count()` reaches `n`; false after 10 s (a guard, not a
  // measurement).
  bool AwaitCreated(int n) { return Await(&created_, n); }
  bool AwaitDeleted(int n) { return Await(&deleted_, n); }

 private:
  int Read(const int& v) {
    absl::MutexLock lock(&mu_);
    return v;
  }
  bool Await(const int* v, int n) {
    absl::MutexLock lock(&mu_);
    auto reached = [v, n]() { return *v >= n; };  // run with mu_ held
    return mu_.AwaitWithTimeout(absl::Condition(&reached), absl::Seconds(10));
  }

  absl::Mutex mu_;
  int created_ ABSL_GUARDED_BY(mu_) = 0;
  int completed_ ABSL_GUARDED_BY(mu_) = 0;
  int deleted_ ABSL_GUARDED_BY(mu_) = 0;
  size_t stored_bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

// A tenant without quotas, no keys (dev mode asks for the tenant's quotas).
class NoDirectory : public store::Directory {
 public:
  absl::StatusOr<std::optional<model::ApiKeyRecord>> LookupApiKey(const std::string&) override {
    return std::nullopt;
  }
  absl::StatusOr<std::optional<model::TenantRecord>> LookupTenant(const std::string&) override {
    return std::nullopt;
  }
};

class FakeUploads : public bus::Uploads {
 public:
  explicit FakeUploads(store::PayloadStore* store) : store_(store) {}
  absl::StatusOr<std::unique_ptr<bus::Upload>> BeginUpload(const std::string& tenant,
                                                           const std::string& topic,
                                                           bool compressed,
                                                           const bus::TenantLimits&) override {
    return bus::Upload::Begin(store_, tenant, topic, int64_t{1} << 30, compressed);
  }

 private:
  store::PayloadStore* store_;
};

class Service : public v1::BusService::CallbackService {
 public:
  Service(bus::Uploads* uploads, CallContext cc) : uploads_(uploads), cc_(cc) {}
  grpc::ServerReadReactor<v1::UploadPayloadRequest>* UploadPayload(
      grpc::CallbackServerContext* ctx, v1::UploadPayloadResponse* resp) override {
    return NewUploadReactor(uploads_, cc_, ctx, resp);
  }

 private:
  bus::Uploads* uploads_;
  CallContext cc_;
};

class UploadReactorTest : public ::testing::Test {
 protected:
  explicit UploadReactorTest(int64_t memory = int64_t{64} << 20, size_t max_queued = 16)
      : pool_("upload-test", 1, max_queued),
        auth_(&directory_, DevMode()),
        memory_(memory),
        uploads_(&store_),
        service_(&uploads_, CallContext{&pool_, &auth_, nullptr, &memory_}) {
    grpc::ServerBuilder builder;
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    stub_ = v1::BusService::NewStub(server_->InProcessChannel(grpc::ChannelArguments()));
  }
  ~UploadReactorTest() override {
    server_->Shutdown();
    pool_.Stop();
  }

  static auth::AuthOptions DevMode() {
    auth::AuthOptions options;
    options.dev_mode = true;  // every call runs as one tenant, every scope
    return options;
  }

  static v1::UploadPayloadRequest Chunk(const std::string& data) {
    v1::UploadPayloadRequest req;
    req.set_topic("files");
    req.set_data(data);
    return req;
  }

  // Sends `chunks`, half-closes and returns the call's status.
  grpc::Status Upload(const std::vector<v1::UploadPayloadRequest>& chunks,
                      v1::UploadPayloadResponse* resp) {
    grpc::ClientContext ctx;
    auto writer = stub_->UploadPayload(&ctx, resp);
    for (const auto& c : chunks) {
      if (!writer->Write(c)) break;  // the server ended the call
    }
    writer->WritesDone();
    return writer->Finish();
  }

  FakePayloadStore store_;
  NoDirectory directory_;
  WorkerPool pool_;
  auth::Authenticator auth_;
  MemoryBudget memory_;
  FakeUploads uploads_;
  Service service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::BusService::Stub> stub_;
};

TEST_F(UploadReactorTest, TheLastChunkAnswersTheHandle) {
  v1::UploadPayloadResponse resp;
  grpc::Status st = Upload({Chunk("hello "), Chunk("world")}, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_FALSE(resp.payload_handle().empty());
  EXPECT_EQ(resp.size(), 11);
  EXPECT_EQ(resp.sha256(), Sha256("hello world"));
  EXPECT_EQ(store_.completed(), 1);
  EXPECT_EQ(store_.stored_bytes(), 11u);
  EXPECT_EQ(store_.deleted(), 0);
}

TEST_F(UploadReactorTest, AnOversizeRequestEndsTheCallAndDeletesWhatWasStored) {
  v1::UploadPayloadResponse resp;
  grpc::Status st =
      Upload({Chunk("first"), Chunk(std::string(bus::kChunkSize + 1, 'x'))}, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("per request"), std::string::npos) << st.error_message();
  ASSERT_TRUE(store_.AwaitDeleted(1));
  EXPECT_EQ(store_.completed(), 0);
}

TEST_F(UploadReactorTest, AChecksumThatDoesNotMatchIsDataLossAndNothingStays) {
  v1::UploadPayloadRequest req = Chunk("hello");
  req.set_sha256(Sha256("something else"));
  v1::UploadPayloadResponse resp;
  grpc::Status st = Upload({req}, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::DATA_LOSS);
  EXPECT_EQ(store_.completed(), 0);
  ASSERT_TRUE(store_.AwaitDeleted(1));
}

TEST_F(UploadReactorTest, AnUnknownTopicIsNotFoundAndCreatesNothing) {
  v1::UploadPayloadRequest req = Chunk("hello");
  req.set_topic("nope");
  v1::UploadPayloadResponse resp;
  EXPECT_EQ(Upload({req}, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(store_.created(), 0);
}

TEST_F(UploadReactorTest, ACancelledUploadIsDeleted) {
  grpc::ClientContext ctx;
  v1::UploadPayloadResponse resp;
  auto writer = stub_->UploadPayload(&ctx, &resp);
  ASSERT_TRUE(writer->Write(Chunk("part one")));
  // The upload exists (its first chunk was taken) before the cancel.
  ASSERT_TRUE(store_.AwaitCreated(1));
  ctx.TryCancel();
  EXPECT_EQ(writer->Finish().error_code(), grpc::StatusCode::CANCELLED);
  ASSERT_TRUE(store_.AwaitDeleted(1));
  EXPECT_EQ(store_.completed(), 0);
}

class SmallMemoryTest : public UploadReactorTest {
 protected:
  SmallMemoryTest() : UploadReactorTest(/*memory=*/bus::kChunkSize) {}
};

// Overload, not the caller's fault: UNAVAILABLE, to retry with backoff.
TEST_F(SmallMemoryTest, NoMemoryForTheCallIsUnavailableAndCreatesNothing) {
  v1::UploadPayloadResponse resp;
  grpc::Status st = Upload({Chunk("hello")}, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(st.error_message().find("max_call_memory_mb"), std::string::npos)
      << st.error_message();
  EXPECT_EQ(store_.created(), 0);
}

class FullPoolTest : public UploadReactorTest {
 protected:
  FullPoolTest() : UploadReactorTest(int64_t{64} << 20, /*max_queued=*/1) {}
};

TEST_F(FullPoolTest, AFullWorkerPoolIsUnavailableAndCreatesNothing) {
  // The pool's one thread is busy and its one queue slot taken.
  absl::Notification release, busy;
  ASSERT_TRUE(pool_.Submit([&] {
    busy.Notify();
    release.WaitForNotification();
  }));
  busy.WaitForNotification();
  ASSERT_TRUE(pool_.Submit([] {}));
  v1::UploadPayloadResponse resp;
  grpc::Status st = Upload({Chunk("hello")}, &resp);
  release.Notify();
  pool_.Stop();  // the busy task is done with the notifications before they go
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(store_.created(), 0);
}

}  // namespace
}  // namespace pgbus::api
