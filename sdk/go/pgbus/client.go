// Package pgbus is the Go client of pgbus: a thin layer over the stubs
// generated from proto/pgbus/v1 (package pgbusv1, in ./v1) that adds what
// every user would otherwise write: API-key authentication and deadlines,
// a batching Publisher whose retries cannot duplicate, a flow-controlled
// Subscriber that keeps leases alive and reconnects, and large payloads
// uploaded and retrieved in chunks with their SHA-256 checked.
package pgbus

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"io"
	"math/rand/v2"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/pgbus/pgbus/sdk/go/pgbus/v1"
)

const (
	// DefaultInlineLimit is the server's default inline payload limit;
	// larger payloads are uploaded and published by handle.
	DefaultInlineLimit = 256 << 10
	chunkBytes         = 1 << 20 // one UploadPayload request
	retrieveBytes      = 2 << 20 // what one Retrieve asks for
)

// Client is a connection to pgbusd, safe for concurrent use.
type Client struct {
	conn    *grpc.ClientConn
	Bus     pb.BusServiceClient   // the generated stubs, for anything not wrapped
	Admin   pb.AdminServiceClient // here (their calls carry the API key too)
	timeout time.Duration
}

type options struct {
	apiKey  string
	tls     *tls.Config
	timeout time.Duration
	dial    []grpc.DialOption
}

// Option configures NewClient.
type Option func(*options)

// WithAPIKey sends `authorization: Bearer <key>` on every call (default:
// $PGBUS_API_KEY).
func WithAPIKey(key string) Option { return func(o *options) { o.apiKey = key } }

// WithTLS connects over TLS with the given configuration (RootCAs for a
// private CA; Certificates for mutual TLS).
func WithTLS(cfg *tls.Config) Option { return func(o *options) { o.tls = cfg } }

// WithTimeout is the deadline of each unary call whose context has none
// (default 30 s).
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithDialOptions adds gRPC dial options (interceptors, say).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dial = append(o.dial, opts...) }
}

type apiKey struct {
	header string
	secure bool
}

func (k apiKey) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": k.header}, nil
}
func (k apiKey) RequireTransportSecurity() bool { return k.secure }

// NewClient connects to target (default: $PGBUS_SERVER, else
// localhost:50051). The connection is made lazily and remade within 5 s
// when a replica restarts.
func NewClient(target string, opts ...Option) (*Client, error) {
	o := options{apiKey: os.Getenv("PGBUS_API_KEY"), timeout: 30 * time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	if target == "" {
		target = os.Getenv("PGBUS_SERVER")
	}
	if target == "" {
		target = "localhost:50051"
	}
	dial := []grpc.DialOption{
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16 << 20)),
		// A restarted replica is back in seconds: gRPC's default backoff
		// reaches 120 s.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{BaseDelay: 200 * time.Millisecond, Multiplier: 1.6,
				Jitter: 0.2, MaxDelay: 5 * time.Second},
			MinConnectTimeout: 5 * time.Second,
		}),
	}
	if o.tls != nil {
		dial = append(dial, grpc.WithTransportCredentials(credentials.NewTLS(o.tls)))
	} else {
		dial = append(dial, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if o.apiKey != "" {
		dial = append(dial, grpc.WithPerRPCCredentials(apiKey{"Bearer " + o.apiKey, o.tls != nil}))
	}
	conn, err := grpc.NewClient(target, append(dial, o.dial...)...)
	if err != nil {
		return nil, err
	}
	return &Client{conn: conn, Bus: pb.NewBusServiceClient(conn),
		Admin: pb.NewAdminServiceClient(conn), timeout: o.timeout}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// bounded gives ctx the client's timeout when it has no deadline.
func (c *Client) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, c.timeout)
}

// Duration converts for the proto's Duration fields; 0 stays unset.
func Duration(d time.Duration) *durationpb.Duration {
	if d == 0 {
		return nil
	}
	return durationpb.New(d)
}

// CreateTopic creates a topic (name and options in t).
func (c *Client) CreateTopic(ctx context.Context, t *pb.Topic) (*pb.Topic, error) {
	ctx, cancel := c.bounded(ctx)
	defer cancel()
	r, err := c.Admin.CreateTopic(ctx, &pb.CreateTopicRequest{Topic: t})
	return r.GetTopic(), err
}

// DeleteTopic deletes a topic with its messages.
func (c *Client) DeleteTopic(ctx context.Context, name string) error {
	ctx, cancel := c.bounded(ctx)
	defer cancel()
	_, err := c.Admin.DeleteTopic(ctx, &pb.DeleteTopicRequest{Name: name})
	return err
}

// CreateSubscription creates a subscription (name, topic and options in s).
func (c *Client) CreateSubscription(ctx context.Context, s *pb.Subscription) (*pb.Subscription, error) {
	ctx, cancel := c.bounded(ctx)
	defer cancel()
	r, err := c.Admin.CreateSubscription(ctx, &pb.CreateSubscriptionRequest{Subscription: s})
	return r.GetSubscription(), err
}

// DeleteSubscription deletes a subscription with its deliveries.
func (c *Client) DeleteSubscription(ctx context.Context, name string) error {
	ctx, cancel := c.bounded(ctx)
	defer cancel()
	_, err := c.Admin.DeleteSubscription(ctx, &pb.DeleteSubscriptionRequest{Name: name})
	return err
}

// Stats of a subscription (backlog, in flight, oldest unacked, counters).
func (c *Client) Stats(ctx context.Context, subscription string) (*pb.GetStatsResponse, error) {
	ctx, cancel := c.bounded(ctx)
	defer cancel()
	return c.Admin.GetStats(ctx, &pb.GetStatsRequest{Subscription: subscription})
}

// GetTopic returns a topic with its settings.
func (c *Client) GetTopic(ctx context.Context, name string) (*pb.Topic, error) {
	ctx, cancel := c.bounded(ctx)
	defer cancel()
	r, err := c.Admin.GetTopic(ctx, &pb.GetTopicRequest{Name: name})
	return r.GetTopic(), err
}

// ListTopics returns every topic, reading the pages pageSize at a time
// (0: the server's default).
func (c *Client) ListTopics(ctx context.Context, pageSize int32) ([]*pb.Topic, error) {
	var all []*pb.Topic
	err := c.pages(ctx, func(ctx context.Context, token string) (string, error) {
		r, err := c.Admin.ListTopics(ctx, &pb.ListTopicsRequest{PageSize: pageSize, PageToken: token})
		all = append(all, r.GetTopics()...)
		return r.GetNextPageToken(), err
	})
	return all, err
}

// GetSubscription returns a subscription with its settings.
func (c *Client) GetSubscription(ctx context.Context, name string) (*pb.Subscription, error) {
	ctx, cancel := c.bounded(ctx)
	defer cancel()
	r, err := c.Admin.GetSubscription(ctx, &pb.GetSubscriptionRequest{Name: name})
	return r.GetSubscription(), err
}

// ListSubscriptions returns the subscriptions of topic (every one when
// topic is empty), reading the pages pageSize at a time.
func (c *Client) ListSubscriptions(ctx context.Context, topic string, pageSize int32) ([]*pb.Subscription, error) {
	var all []*pb.Subscription
	err := c.pages(ctx, func(ctx context.Context, token string) (string, error) {
		r, err := c.Admin.ListSubscriptions(ctx, &pb.ListSubscriptionsRequest{
			Topic: topic, PageSize: pageSize, PageToken: token})
		all = append(all, r.GetSubscriptions()...)
		return r.GetNextPageToken(), err
	})
	return all, err
}

// Seek replays (or skips) a subscription to the messages published since t.
func (c *Client) Seek(ctx context.Context, subscription string, t time.Time) error {
	ctx, cancel := c.bounded(ctx)
	defer cancel()
	_, err := c.Admin.Seek(ctx, &pb.SeekRequest{Subscription: subscription, Time: timestamppb.New(t)})
	return err
}

// ListMessages returns the messages with a correlation id.
func (c *Client) ListMessages(ctx context.Context, correlationID string, pageSize int32) ([]*pb.Message, error) {
	var all []*pb.Message
	err := c.pages(ctx, func(ctx context.Context, token string) (string, error) {
		r, err := c.Admin.ListMessages(ctx, &pb.ListMessagesRequest{
			CorrelationId: correlationID, PageSize: pageSize, PageToken: token})
		all = append(all, r.GetMessages()...)
		return r.GetNextPageToken(), err
	})
	return all, err
}

// ListDeadLetters returns the dead letters of a subscription (messages of
// its dead-letter topic, with the pgbus.dead_letter.* attributes).
func (c *Client) ListDeadLetters(ctx context.Context, subscription string, pageSize int32) ([]*pb.Message, error) {
	var all []*pb.Message
	err := c.pages(ctx, func(ctx context.Context, token string) (string, error) {
		r, err := c.Admin.ListDeadLetters(ctx, &pb.ListDeadLettersRequest{
			Subscription: subscription, PageSize: pageSize, PageToken: token})
		all = append(all, r.GetMessages()...)
		return r.GetNextPageToken(), err
	})
	return all, err
}

// RedriveDeadLetters publishes dead letters of a subscription to their
// original topic again (these ids, or the oldest limit when ids is empty)
// and returns the new ids.
func (c *Client) RedriveDeadLetters(ctx context.Context, subscription string, ids []string,
	limit int32) ([]string, error) {
	ctx, cancel := c.bounded(ctx)
	defer cancel()
	r, err := c.Admin.RedriveDeadLetters(ctx, &pb.RedriveDeadLettersRequest{
		Subscription: subscription, MessageIds: ids, Limit: limit})
	return r.GetMessageIds(), err
}

// pages calls page with each page token in turn (each call with its own
// deadline) until the server returns no next token.
func (c *Client) pages(ctx context.Context, page func(context.Context, string) (string, error)) error {
	token := ""
	for {
		bctx, cancel := c.bounded(ctx)
		next, err := page(bctx, token)
		cancel()
		if err != nil || next == "" {
			return err
		}
		token = next
	}
}

// Publish makes one Publish call: no batching and no retry (see Publisher).
// Returns the message ids in order.
func (c *Client) Publish(ctx context.Context, topic string, msgs []*pb.PublishMessage) ([]string, error) {
	ctx, cancel := c.bounded(ctx)
	defer cancel()
	r, err := c.Bus.Publish(ctx, &pb.PublishRequest{Topic: topic, Messages: msgs})
	return r.GetMessageIds(), err
}

// Ack acknowledges deliveries; per ack id ACK_STATUS_OK, or
// ACK_STATUS_EXPIRED when its lease was lost (it may come again).
func (c *Client) Ack(ctx context.Context, subscription string, ackIDs []string) ([]pb.AckStatus, error) {
	ctx, cancel := c.bounded(ctx)
	defer cancel()
	r, err := c.Bus.Ack(ctx, &pb.AckRequest{Subscription: subscription, AckIds: ackIDs})
	return statuses(r.GetResults()), err
}

// ModifyAckDeadline sets the deadline of leases to d from now; 0 is a nack
// (redelivered after the subscription's backoff), with an optional reason.
func (c *Client) ModifyAckDeadline(ctx context.Context, subscription string, ackIDs []string,
	d time.Duration, reason string) ([]pb.AckStatus, error) {
	ctx, cancel := c.bounded(ctx)
	defer cancel()
	r, err := c.Bus.ModifyAckDeadline(ctx, &pb.ModifyAckDeadlineRequest{
		Subscription: subscription, AckIds: ackIDs, AckDeadline: durationpb.New(d), Reason: reason})
	return statuses(r.GetResults()), err
}

func statuses(results []*pb.AckResult) []pb.AckStatus {
	out := make([]pb.AckStatus, len(results))
	for i, r := range results {
		out[i] = r.GetStatus()
	}
	return out
}

// Upload streams r to UploadPayload in 1 MiB requests, hashing as it goes
// (memory stays at one chunk); the server checks the SHA-256 sent with the
// last request. Publish the returned handle in PublishMessage.PayloadHandle.
func (c *Client) Upload(ctx context.Context, topic string, r io.Reader) (*pb.UploadPayloadResponse, error) {
	stream, err := c.Bus.UploadPayload(ctx)
	if err != nil {
		return nil, err
	}
	digest := sha256.New()
	buf := make([]byte, chunkBytes)
	first := true
	for {
		n, rerr := io.ReadFull(r, buf)
		if rerr != nil && rerr != io.EOF && rerr != io.ErrUnexpectedEOF {
			stream.CloseSend()
			return nil, rerr
		}
		digest.Write(buf[:n])
		last := rerr != nil
		req := &pb.UploadPayloadRequest{Data: buf[:n]}
		if first {
			req.Topic = topic
			first = false
		}
		if last {
			req.Sha256 = digest.Sum(nil)
		}
		if n > 0 || last {
			if err := stream.Send(req); err != nil {
				break // the server ended the call: CloseAndRecv says why
			}
		}
		if last {
			break
		}
	}
	return stream.CloseAndRecv()
}

// Retrieve writes a message's whole payload to w in ranged Retrieve calls
// and checks it against the message's SHA-256: a mismatch is a
// *DataLossError (with w, the bytes were written by then: write to a
// temporary place; RetrieveBytes returns nothing unchecked).
func (c *Client) Retrieve(ctx context.Context, messageID string, w io.Writer) error {
	digest := sha256.New()
	var offset, size int64 = 0, -1
	var want []byte
	for size < 0 || offset < size {
		cctx, cancel := c.bounded(ctx)
		r, err := c.Bus.Retrieve(cctx, &pb.RetrieveRequest{MessageId: messageID, Offset: offset,
			Length: retrieveBytes})
		cancel()
		if err != nil {
			return err
		}
		if size < 0 {
			size, want = r.GetMessage().GetSize(), r.GetMessage().GetSha256()
		}
		if len(r.GetData()) == 0 {
			break
		}
		digest.Write(r.GetData())
		if _, err := w.Write(r.GetData()); err != nil {
			return err
		}
		offset += int64(len(r.GetData()))
	}
	if offset != size || string(digest.Sum(nil)) != string(want) {
		return &DataLossError{MessageID: messageID,
			Detail: "the bytes received do not match the message's SHA-256"}
	}
	return nil
}

// RetrieveBytes is Retrieve into memory; nothing is returned unless the
// SHA-256 matches.
func (c *Client) RetrieveBytes(ctx context.Context, messageID string) ([]byte, error) {
	var buf bytes.Buffer
	if err := c.Retrieve(ctx, messageID, &buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// withRetries calls fn until it succeeds, fails with an error that is not
// Retryable, ctx ends, or budget has passed (then the last error), backing
// off exponentially with full jitter. A budget of time, not of attempts:
// while a replica restarts the channel fails fast for a few seconds.
func withRetries(ctx context.Context, budget time.Duration, fn func(context.Context) error) error {
	giveUp := time.Now().Add(budget)
	delay := 100 * time.Millisecond
	for {
		err := fn(ctx)
		if err == nil {
			return nil
		}
		if !Retryable(err) || ctx.Err() != nil || time.Now().After(giveUp) {
			return ctxErr(ctx, err)
		}
		sleep := time.Duration(rand.Int64N(int64(delay)) + 1)
		if left := time.Until(giveUp); sleep > left {
			sleep = max(left, 0)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(sleep):
		}
		delay = min(delay*2, 5*time.Second)
	}
}
