package pgbus_test

// The shared scenarios of sdk/conformance/scenarios.md against a live
// pgbusd; each test names its scenario.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pgbus/pgbus/sdk/go/pgbus"
	pb "github.com/pgbus/pgbus/sdk/go/pgbus/v1"
)

func connect(t *testing.T, s *server, opts ...pgbus.Option) *pgbus.Client {
	t.Helper()
	c, err := pgbus.NewClient(s.Target, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func topicWithSubscription(t *testing.T, c *pgbus.Client, sub *pb.Subscription) {
	t.Helper()
	ctx := context.Background()
	if _, err := c.CreateTopic(ctx, &pb.Topic{Name: sub.Topic}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateSubscription(ctx, sub); err != nil {
		t.Fatal(err)
	}
}

// inbox collects what Receive's handler is given, acking unless told
// otherwise, and tracks how many handlers held an unsettled message at once.
type inbox struct {
	mu            sync.Mutex
	got           []*pgbus.Received
	concurrent    int
	maxConcurrent int
	hold          time.Duration
	settle        func(*pgbus.Received) // default: Ack
}

func (in *inbox) handle(_ context.Context, m *pgbus.Received) {
	in.mu.Lock()
	in.concurrent++
	in.maxConcurrent = max(in.maxConcurrent, in.concurrent)
	in.mu.Unlock()
	time.Sleep(in.hold)
	// Counted down before the message is settled: once it is, the server
	// may hand its credit to the next message at once.
	in.mu.Lock()
	in.concurrent--
	in.mu.Unlock()
	if in.settle != nil {
		in.settle(m)
	} else {
		_ = m.Ack()
	}
	in.mu.Lock()
	in.got = append(in.got, m)
	in.mu.Unlock()
}

// waitFor waits until n messages were handled, or timeout.
func (in *inbox) waitFor(n int, timeout time.Duration) {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); {
		in.mu.Lock()
		k := len(in.got)
		in.mu.Unlock()
		if k >= n {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// receive runs a subscriber until n messages were handled (or timeout),
// then stops it; returns what was handled.
func receive(t *testing.T, c *pgbus.Client, sub string, settings *pgbus.ReceiveSettings,
	in *inbox, n int, timeout time.Duration) []*pgbus.Received {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Subscriber(sub, settings).Receive(ctx, in.handle) }()
	in.waitFor(n, timeout)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Receive: %v", err)
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]*pgbus.Received(nil), in.got...)
}

func TestRoundTripWithAttributesPriorityAndCorrelation(t *testing.T) {
	c := connect(t, startServer(t, false))
	topicWithSubscription(t, c, &pb.Subscription{Name: "s", Topic: "t"})
	ctx := context.Background()
	pub := c.Publisher("t", nil)
	low := pub.Publish(ctx, &pgbus.Message{Data: []byte("low")})
	high := pub.Publish(ctx, &pgbus.Message{Data: []byte("high"), Priority: 5,
		Attributes: map[string]string{"kind": "order"}, CorrelationID: "req-1"})
	pub.Stop()
	for _, r := range []*pgbus.PublishResult{low, high} {
		if _, err := r.Get(ctx); err != nil {
			t.Fatal(err)
		}
	}
	got := receive(t, c, "s", nil, &inbox{}, 2, 15*time.Second)
	if len(got) != 2 {
		t.Fatalf("received %d messages, want 2", len(got))
	}
	byData := map[string]*pgbus.Received{}
	for _, m := range got {
		data, err := m.Data(ctx)
		if err != nil {
			t.Fatal(err)
		}
		byData[string(data)] = m
		if m.DeliveryAttempt != 1 {
			t.Errorf("attempt %d, want 1", m.DeliveryAttempt)
		}
	}
	h := byData["high"]
	if h == nil || byData["low"] == nil {
		t.Fatalf("received %v", byData)
	}
	if h.Message.GetPriority() != 5 || h.Attributes()["kind"] != "order" ||
		h.Message.GetCorrelationId() != "req-1" {
		t.Errorf("fields lost: %v", h.Message)
	}
	if hid, _ := high.Get(ctx); h.ID() != hid {
		t.Errorf("id %s, published as %s", h.ID(), hid)
	}
}

func TestBatchingMakesFarFewerCalls(t *testing.T) {
	s := startServer(t, false)
	c := connect(t, s)
	if _, err := c.CreateTopic(context.Background(), &pb.Topic{Name: "t"}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	pub := c.Publisher("t", &pgbus.PublishSettings{MaxMessages: 100, MaxDelay: 50 * time.Millisecond})
	results := make([]*pgbus.PublishResult, 1000)
	for i := range results {
		results[i] = pub.Publish(ctx, &pgbus.Message{Data: []byte(fmt.Sprint(i))})
	}
	pub.Flush()
	ids := map[string]bool{}
	for _, r := range results {
		id, err := r.Get(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ids[id] = true
	}
	pub.Stop()
	if len(ids) != 1000 {
		t.Errorf("%d distinct ids, want 1000", len(ids))
	}
	if n := sql(t, s.Tenant, "SELECT count(*) FROM pgbus.messages"); n != "1000" {
		t.Errorf("%s rows stored, want 1000", n)
	}
	if pub.Calls() > 50 {
		t.Errorf("%d Publish calls for 1000 messages", pub.Calls())
	}
}

func TestOrderingKeyKeepsItsOrderThroughBatches(t *testing.T) {
	c := connect(t, startServer(t, false))
	topicWithSubscription(t, c, &pb.Subscription{Name: "s", Topic: "t"})
	ctx := context.Background()
	pub := c.Publisher("t", &pgbus.PublishSettings{MaxMessages: 7})
	for i := 0; i < 50; i++ {
		pub.Publish(ctx, &pgbus.Message{Data: []byte(fmt.Sprint(i)), OrderingKey: "k"})
	}
	pub.Stop()
	got := receive(t, c, "s", &pgbus.ReceiveSettings{NumGoroutines: 1}, &inbox{}, 50, 20*time.Second)
	if len(got) != 50 {
		t.Fatalf("received %d, want 50", len(got))
	}
	for i, m := range got {
		if string(m.Message.GetPayload()) != fmt.Sprint(i) {
			t.Fatalf("message %d is %q: out of order", i, m.Message.GetPayload())
		}
	}
}

func TestBatchesWithoutOrderingKeysArePipelinedAndKeyedOnesGoAlone(t *testing.T) {
	s := startServer(t, false)
	// Counts the Publish calls out at once, and the most seen.
	var out, most atomic.Int32
	count := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn,
		invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if !strings.HasSuffix(method, "/Publish") {
			return invoker(ctx, method, req, reply, cc, opts...)
		}
		now := out.Add(1)
		for prev := most.Load(); now > prev && !most.CompareAndSwap(prev, now); prev = most.Load() {
		}
		defer out.Add(-1)
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	c := connect(t, s, pgbus.WithDialOptions(grpc.WithUnaryInterceptor(count)))
	topicWithSubscription(t, c, &pb.Subscription{Name: "s", Topic: "t"})
	ctx := context.Background()
	settings := &pgbus.PublishSettings{MaxMessages: 10}
	pub := c.Publisher("t", settings)
	results := make([]*pgbus.PublishResult, 2000)
	for i := range results {
		results[i] = pub.Publish(ctx, &pgbus.Message{Data: []byte("x")})
	}
	for _, r := range results {
		if _, err := r.Get(ctx); err != nil {
			t.Fatal(err)
		}
	}
	pub.Stop()
	if most.Load() < 2 || most.Load() > 4 {
		t.Errorf("at most %d Publish calls out at once, want 2..4 (MaxOutstandingCalls)", most.Load())
	}
	// Every 5th message keyed, 10 a batch: every batch holds a key, so
	// each goes alone.
	most.Store(0)
	pub = c.Publisher("t", settings)
	for i := 0; i < 200; i++ {
		key := ""
		if i%5 == 0 {
			key = "k"
		}
		pub.Publish(ctx, &pgbus.Message{Data: []byte(fmt.Sprint(i)), OrderingKey: key})
	}
	pub.Stop()
	if most.Load() != 1 {
		t.Errorf("%d Publish calls out at once with ordering keys, want 1", most.Load())
	}
}

func TestNackRedeliversWithAttemptTwo(t *testing.T) {
	c := connect(t, startServer(t, false))
	topicWithSubscription(t, c, &pb.Subscription{Name: "s", Topic: "t"})
	ctx := context.Background()
	if _, err := c.Publish(ctx, "t", []*pb.PublishMessage{{Payload: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	in := &inbox{settle: func(m *pgbus.Received) {
		if m.DeliveryAttempt == 1 {
			if err := m.Nack("try again"); err != nil {
				t.Errorf("nack: %v", err)
			}
		} else if err := m.Ack(); err != nil {
			t.Errorf("ack: %v", err)
		}
	}}
	got := receive(t, c, "s", nil, in, 2, 15*time.Second)
	if len(got) != 2 || got[0].DeliveryAttempt != 1 || got[1].DeliveryAttempt != 2 {
		t.Fatalf("got %d deliveries, want attempts 1 then 2", len(got))
	}
}

func TestAcksThatDoNotWaitShareCalls(t *testing.T) {
	c := connect(t, startServer(t, false))
	topicWithSubscription(t, c, &pb.Subscription{Name: "s", Topic: "t"})
	ctx := context.Background()
	const n = 500
	pub := c.Publisher("t", nil)
	for i := 0; i < n; i++ {
		pub.Publish(ctx, &pgbus.Message{Data: []byte(fmt.Sprint(i))})
	}
	pub.Stop()
	var mu sync.Mutex
	var results []*pgbus.AckResult
	var first *pgbus.Received // left unsettled, acked after Receive returned
	in := &inbox{settle: func(m *pgbus.Received) {
		mu.Lock()
		defer mu.Unlock()
		if string(m.Message.GetPayload()) == "0" {
			first = m
			return
		}
		results = append(results, m.AckAsync())
	}}
	sub := c.Subscriber("s", nil)
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- sub.Receive(rctx, in.handle) }()
	in.waitFor(n, 30*time.Second)
	mu.Lock()
	answers := append([]*pgbus.AckResult(nil), results...)
	mu.Unlock()
	if len(answers) != n-1 {
		t.Fatalf("%d acks queued, want %d", len(answers), n-1)
	}
	for _, r := range answers {
		if err := r.Get(ctx); err != nil {
			t.Errorf("ack: %v", err)
		}
	}
	// One call at a time, each carrying what queued meanwhile: far fewer
	// calls than acks (one each would be 499).
	if calls := sub.AckCalls(); calls > n/4 {
		t.Errorf("%d Ack calls for %d acks", calls, n-1)
	}
	in.mu.Lock()
	again := in.got[1]
	in.mu.Unlock()
	if err := again.AckAsync().Get(ctx); !errors.Is(err, pgbus.ErrLeaseExpired) {
		t.Errorf("second ack of a message: %v, want ErrLeaseExpired", err)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// After Receive returned an ack is a call of its own, and still lands.
	if first == nil {
		t.Fatal("message 0 was not delivered")
	}
	if err := first.AckAsync().Get(ctx); err != nil {
		t.Errorf("ack after Receive returned: %v", err)
	}
	st, err := c.Stats(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	if st.GetPending()+st.GetInFlight() != 0 {
		t.Errorf("pending %d, in flight %d after every message was acked",
			st.GetPending(), st.GetInFlight())
	}
}

func TestSlowHandlerKeepsItsLease(t *testing.T) {
	c := connect(t, startServer(t, false))
	topicWithSubscription(t, c, &pb.Subscription{Name: "s", Topic: "t",
		AckDeadline: pgbus.Duration(time.Second)})
	ctx := context.Background()
	if _, err := c.Publish(ctx, "t", []*pb.PublishMessage{{Payload: []byte("slow")}}); err != nil {
		t.Fatal(err)
	}
	in := &inbox{hold: 3 * time.Second}
	in.settle = func(m *pgbus.Received) {
		if err := m.Ack(); err != nil {
			t.Errorf("ack after 3 s: %v", err)
		}
	}
	// Runs a while longer than the handler: a lost lease would redeliver.
	got := receive(t, c, "s", &pgbus.ReceiveSettings{AckDeadline: time.Second}, in, 2,
		5*time.Second)
	if len(got) != 1 {
		t.Fatalf("delivered %d times, want once", len(got))
	}
}

func TestFlowControlCapsOutstandingMessages(t *testing.T) {
	c := connect(t, startServer(t, false))
	topicWithSubscription(t, c, &pb.Subscription{Name: "s", Topic: "t"})
	ctx := context.Background()
	msgs := make([]*pb.PublishMessage, 20)
	for i := range msgs {
		msgs[i] = &pb.PublishMessage{Payload: []byte(fmt.Sprint(i))}
	}
	if _, err := c.Publish(ctx, "t", msgs); err != nil {
		t.Fatal(err)
	}
	in := &inbox{hold: 200 * time.Millisecond}
	got := receive(t, c, "s", &pgbus.ReceiveSettings{MaxOutstandingMessages: 3, NumGoroutines: 10},
		in, 20, 30*time.Second)
	if len(got) != 20 {
		t.Fatalf("received %d, want 20", len(got))
	}
	if in.maxConcurrent > 3 {
		t.Errorf("%d handlers at once with at most 3 outstanding", in.maxConcurrent)
	}
}

func TestLargePayloadRoundTripChecked(t *testing.T) {
	c := connect(t, startServer(t, false))
	topicWithSubscription(t, c, &pb.Subscription{Name: "s", Topic: "t"})
	ctx := context.Background()
	data := make([]byte, 8<<20)
	_, _ = rand.Read(data)
	pub := c.Publisher("t", nil)
	id, err := pub.Publish(ctx, &pgbus.Message{Data: data}).Get(ctx)
	pub.Stop()
	if err != nil {
		t.Fatal(err)
	}
	got := receive(t, c, "s", nil, &inbox{}, 1, 15*time.Second)
	if len(got) != 1 || got[0].ID() != id || !got[0].Message.GetPayloadByReference() {
		t.Fatalf("got %d messages; want %s by reference", len(got), id)
	}
	back, err := got[0].Data(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back, data) {
		t.Fatal("the payload came back different")
	}
}

func TestDataLossIsATypedError(t *testing.T) {
	s := startServer(t, false)
	c := connect(t, s)
	ctx := context.Background()
	if _, err := c.CreateTopic(ctx, &pb.Topic{Name: "files"}); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 3<<20)
	_, _ = rand.Read(data)
	pub := c.Publisher("files", nil)
	id, err := pub.Publish(ctx, &pgbus.Message{Data: data}).Get(ctx)
	pub.Stop()
	if err != nil {
		t.Fatal(err)
	}
	sql(t, s.Tenant, `UPDATE pgbus.payload_chunks SET data = overlay(data placing '\x00ff'::bytea from 7) WHERE seq = 1`)
	back, err := c.RetrieveBytes(ctx, id)
	if status.Code(err) != codes.DataLoss || back != nil {
		t.Fatalf("retrieve of a damaged payload: %d bytes, %v; want DATA_LOSS and nothing", len(back), err)
	}
}

func TestRetriedPublishIsStoredOnce(t *testing.T) {
	s := startServer(t, false)
	var publishes atomic.Int32
	// Lets the first Publish reach the server and commit, then reports
	// UNAVAILABLE, as if its answer was lost.
	lose := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn,
		invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if strings.HasSuffix(method, "/Publish") && publishes.Add(1) == 1 && err == nil {
			return status.Error(codes.Unavailable, "the answer was lost")
		}
		return err
	}
	c := connect(t, s, pgbus.WithDialOptions(grpc.WithUnaryInterceptor(lose)))
	ctx := context.Background()
	if _, err := c.CreateTopic(ctx, &pb.Topic{Name: "t"}); err != nil {
		t.Fatal(err)
	}
	pub := c.Publisher("t", nil)
	id, err := pub.Publish(ctx, &pgbus.Message{Data: []byte("charge 42")}).Get(ctx)
	pub.Stop()
	if err != nil {
		t.Fatal(err)
	}
	if publishes.Load() != 2 {
		t.Errorf("%d Publish calls, want 2 (the first answer lost)", publishes.Load())
	}
	if n := sql(t, s.Tenant, "SELECT count(*) FROM pgbus.messages"); n != "1" {
		t.Errorf("%s messages stored, want 1", n)
	}
	if stored := sql(t, s.Tenant, "SELECT id FROM pgbus.messages"); stored != id {
		t.Errorf("stored %s, the retry answered %s", stored, id)
	}
}

func TestSubscriberReconnectsAfterRestartAndMissesNothing(t *testing.T) {
	s := startServer(t, false)
	c := connect(t, s)
	topicWithSubscription(t, c, &pb.Subscription{Name: "s", Topic: "t"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub := c.Subscriber("s", nil)
	in := &inbox{}
	done := make(chan error, 1)
	go func() { done <- sub.Receive(ctx, in.handle) }()
	count := func() int {
		in.mu.Lock()
		defer in.mu.Unlock()
		return len(in.got)
	}
	waitFor := func(n int, d time.Duration) bool {
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
			if count() >= n {
				return true
			}
		}
		return count() >= n
	}
	if _, err := c.Publish(ctx, "t", []*pb.PublishMessage{{Payload: []byte("before")}}); err != nil {
		t.Fatal(err)
	}
	if !waitFor(1, 10*time.Second) {
		t.Fatal("nothing received before the restart")
	}
	s.stop(syscall.SIGTERM)
	s.start() // the same port
	// The publisher retries while the replica comes back.
	pub := c.Publisher("t", nil)
	_, err := pub.Publish(ctx, &pgbus.Message{Data: []byte("after")}).Get(ctx)
	pub.Stop()
	if err != nil {
		t.Fatal(err)
	}
	both := waitFor(2, 20*time.Second)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Receive: %v", err)
	}
	if !both {
		t.Fatalf("received %d of 2", count())
	}
	var payloads []string
	for _, m := range in.got {
		payloads = append(payloads, string(m.Message.GetPayload()))
	}
	sort.Strings(payloads)
	if strings.Join(payloads, ",") != "after,before" {
		t.Errorf("received %v", payloads)
	}
	if sub.Reconnects() < 1 {
		t.Error("the subscriber never reconnected")
	}
}

func TestTLS(t *testing.T) {
	dir := t.TempDir()
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command("openssl", args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("openssl %v: %v\n%s", args, err, out)
		}
	}
	curve := []string{"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"}
	run(append(append([]string{"req", "-x509"}, curve...), "-days", "1", "-keyout", "ca.key",
		"-out", "ca.pem", "-subj", "/CN=pgbus-go-ca")...)
	run(append(append([]string{"req"}, curve...), "-keyout", "server.key", "-out", "server.csr",
		"-subj", "/CN=localhost")...)
	if err := os.WriteFile(filepath.Join(dir, "server.ext"),
		[]byte("subjectAltName=DNS:localhost,IP:127.0.0.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run("x509", "-req", "-days", "1", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
		"-CAcreateserial", "-out", "server.pem", "-extfile", "server.ext")
	s := startServer(t, false, "--tls-cert-file", filepath.Join(dir, "server.pem"),
		"--tls-key-file", filepath.Join(dir, "server.key"))
	ca, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca)
	ctx := context.Background()
	trusted := connect(t, s, pgbus.WithTLS(&tls.Config{RootCAs: roots}))
	if topic, err := trusted.CreateTopic(ctx, &pb.Topic{Name: "secure"}); err != nil ||
		topic.GetName() != "secure" {
		t.Fatalf("over TLS with the CA: %v, %v", topic, err)
	}
	// The system's CAs do not know this one: the handshake fails.
	untrusted := connect(t, s, pgbus.WithTLS(&tls.Config{}), pgbus.WithTimeout(3*time.Second))
	if _, err := untrusted.CreateTopic(ctx, &pb.Topic{Name: "other"}); status.Code(err) != codes.Unavailable {
		t.Errorf("over TLS without the CA: %v, want UNAVAILABLE", err)
	}
}

func TestAuthErrorsAreTyped(t *testing.T) {
	s := startServer(t, true)
	tenant := randomName("go-auth-")
	operator(t, "tenant", "create", tenant)
	key := operator(t, "key", "issue", tenant, "--scopes", "publish", "--topics", "orders")
	ctx := context.Background()
	bad := connect(t, s, pgbus.WithAPIKey("pgbus_0000000000000000_nope"))
	if _, err := bad.CreateTopic(ctx, &pb.Topic{Name: "orders"}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("unknown key: %v, want UNAUTHENTICATED", err)
	}
	publishOnly := connect(t, s, pgbus.WithAPIKey(key))
	_, err := publishOnly.CreateTopic(ctx, &pb.Topic{Name: "orders"})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), "admin") {
		t.Errorf("publish-only key creating a topic: %v, want PERMISSION_DENIED naming the admin scope", err)
	}
}

// The README's quick start is a whole program: it is built and run
// against the server, and must print what the README says it prints.
func TestReadmeQuickStartRuns(t *testing.T) {
	s := startServer(t, false)
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```go\n(.*?)```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("no ```go block in sdk/go/README.md")
	}
	sdk, _ := filepath.Abs("..")
	dir := t.TempDir()
	sum, _ := os.ReadFile(filepath.Join(sdk, "go.sum"))
	goMod := fmt.Sprintf("module quickstart\n\ngo 1.26\n\nrequire github.com/pgbus/pgbus/sdk/go v0.0.0\n\n"+
		"replace github.com/pgbus/pgbus/sdk/go => %s\n", sdk)
	for name, body := range map[string][]byte{"main.go": m[1], "go.mod": []byte(goMod), "go.sum": sum} {
		if err := os.WriteFile(filepath.Join(dir, name), body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("go", "run", "-mod=mod", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PGBUS_SERVER="+s.Target, "GOFLAGS=-mod=mod")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go run: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	sort.Strings(lines)
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "published ") || lines[1] != "received hello" {
		t.Fatalf("the quick start printed:\n%s", out)
	}
}

// Every admin call the proto has, against the live server.
func TestAdminCallsCoverTheProto(t *testing.T) {
	c := connect(t, startServer(t, false))
	ctx := context.Background()
	orders := &pb.Topic{Name: "orders", Retention: pgbus.Duration(time.Hour),
		DedupWindow: pgbus.Duration(5 * time.Minute), MaxMessageBytes: 4096}
	if _, err := c.CreateTopic(ctx, orders); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateTopic(ctx, &pb.Topic{Name: "dead"}); err != nil {
		t.Fatal(err)
	}
	got, err := c.GetTopic(ctx, "orders")
	if err != nil || got.GetRetention().AsDuration() != time.Hour ||
		got.GetDedupWindow().AsDuration() != 5*time.Minute || got.GetMaxMessageBytes() != 4096 {
		t.Fatalf("GetTopic: %v, %v", got, err)
	}
	topics, err := c.ListTopics(ctx, 1)
	if err != nil || len(topics) != 2 {
		t.Fatalf("ListTopics one a page: %v, %v", topics, err)
	}
	billing := &pb.Subscription{Name: "billing", Topic: "orders",
		AckDeadline: pgbus.Duration(10 * time.Second), MaxDeliveryAttempts: 2,
		DeadLetterTopic: "dead", MinBackoff: pgbus.Duration(100 * time.Millisecond)}
	if _, err := c.CreateSubscription(ctx, billing); err != nil {
		t.Fatal(err)
	}
	sub, err := c.GetSubscription(ctx, "billing")
	if err != nil || sub.GetAckDeadline().AsDuration() != 10*time.Second ||
		sub.GetMaxDeliveryAttempts() != 2 || sub.GetDeadLetterTopic() != "dead" {
		t.Fatalf("GetSubscription: %v, %v", sub, err)
	}
	subs, err := c.ListSubscriptions(ctx, "orders", 0)
	if err != nil || len(subs) != 1 || subs[0].GetName() != "billing" {
		t.Fatalf("ListSubscriptions: %v, %v", subs, err)
	}
	ids, err := c.Publish(ctx, "orders", []*pb.PublishMessage{{Payload: []byte("x"), CorrelationId: "c-1"}})
	if err != nil {
		t.Fatal(err)
	}
	found, err := c.ListMessages(ctx, "c-1", 0)
	if err != nil || len(found) != 1 || found[0].GetId() != ids[0] {
		t.Fatalf("ListMessages: %v, %v", found, err)
	}

	// Seek: a subscription created after the publish has nothing, until it
	// is sought back before it.
	if _, err := c.CreateSubscription(ctx, &pb.Subscription{Name: "replay", Topic: "orders"}); err != nil {
		t.Fatal(err)
	}
	if st, err := c.Stats(ctx, "replay"); err != nil || st.GetPending() != 0 {
		t.Fatalf("before Seek: %v, %v", st, err)
	}
	if err := c.Seek(ctx, "replay", time.Now().Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	if st, err := c.Stats(ctx, "replay"); err != nil || st.GetPending() != 1 {
		t.Fatalf("after Seek: %v, %v", st, err)
	}

	// Dead letters: nacked on both attempts allowed. The subscriber
	// stays open: the move happens when the subscription is next claimed.
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- c.Subscriber("billing", nil).Receive(rctx, func(_ context.Context, m *pgbus.Received) {
			_ = m.Nack("cannot bill")
		})
	}()
	var dead []*pb.Message
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline) && len(dead) == 0; {
		time.Sleep(50 * time.Millisecond)
		if dead, err = c.ListDeadLetters(ctx, "billing", 0); err != nil {
			t.Fatal(err)
		}
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(dead) != 1 || dead[0].GetAttributes()["pgbus.dead_letter.message_id"] != ids[0] {
		t.Fatalf("ListDeadLetters: %v", dead)
	}
	redriven, err := c.RedriveDeadLetters(ctx, "billing", nil, 10)
	if err != nil || len(redriven) != 1 {
		t.Fatalf("RedriveDeadLetters: %v, %v", redriven, err)
	}
	if st, err := c.Stats(ctx, "billing"); err != nil || st.GetDeadLettered() != 1 {
		t.Fatalf("Stats: %v, %v", st, err)
	}
}
