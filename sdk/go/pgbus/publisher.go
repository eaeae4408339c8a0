package pgbus

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/pgbus/pgbus/sdk/go/pgbus/v1"
)

// Message is what a Publisher publishes.
type Message struct {
	Data []byte
	// Reader, when set, is the payload instead of Data: streamed to the
	// server in chunks, never held in memory whole (not retried: it cannot
	// be read twice).
	Reader        io.Reader
	Attributes    map[string]string
	Priority      int32
	CorrelationID string
	OrderingKey   string
	// IdempotencyKey: a random one is generated when empty, so that a
	// retried batch is stored once.
	IdempotencyKey string
	TTL            time.Duration
	DeliverAt      time.Time
}

// PublishSettings tune a Publisher; zero fields take the defaults.
type PublishSettings struct {
	MaxMessages   int           // per Publish call; default 100 (the server takes up to 1000)
	MaxBytes      int           // payload bytes per call; default 1 MiB
	MaxDelay      time.Duration // how long a message waits for its batch to fill; default 10 ms
	InlineLimit   int           // larger payloads are uploaded; default DefaultInlineLimit
	RetryDeadline time.Duration // how long a batch is retried; default 60 s
	// Publish calls out at once; default 4. A batch holding an ordering
	// key is sent alone (after the calls before it are answered, before
	// any after it).
	MaxOutstandingCalls int
}

// PublishResult is the outcome of one Publish: its message id, once the
// batch holding it has been answered.
type PublishResult struct {
	ready chan struct{}
	id    string
	err   error
}

// Ready is closed once the result is known.
func (r *PublishResult) Ready() <-chan struct{} { return r.ready }

// Get waits for the message id (or ctx).
func (r *PublishResult) Get(ctx context.Context) (string, error) {
	select {
	case <-r.ready:
		return r.id, r.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func (r *PublishResult) set(id string, err error) {
	r.id, r.err = id, err
	close(r.ready)
}

type pending struct {
	msg    *pb.PublishMessage
	result *PublishResult
}

// Publisher batches the messages of one topic: many Publish() calls, few
// Publish RPCs. Batches are formed in the order Publish was called and sent
// up to MaxOutstandingCalls at once; a batch that holds an ordering key is
// sent alone, once the calls before it are answered, and is retried whole
// before the next is sent (an ordering key keeps its order through batching
// and retries). A batch that fails with UNAVAILABLE or DEADLINE_EXCEEDED,
// whose first attempt may have been stored with its answer lost, is retried
// for RetryDeadline; every message carries an idempotency key, so it is
// stored once and the retry answers the original ids.
type Publisher struct {
	client   *Client
	topic    string
	settings PublishSettings

	mu       sync.Mutex
	cond     *sync.Cond
	queue    []pending
	bytes    int
	inFlight int
	alone    bool // a batch with an ordering key is out: nothing else is taken
	stopped  bool
	done     chan struct{}
	calls    atomic.Int64
}

// Publisher starts a batching publisher for topic; Stop it when done.
func (c *Client) Publisher(topic string, settings *PublishSettings) *Publisher {
	s := PublishSettings{}
	if settings != nil {
		s = *settings
	}
	if s.MaxMessages <= 0 {
		s.MaxMessages = 100
	}
	if s.MaxBytes <= 0 {
		s.MaxBytes = 1 << 20
	}
	if s.MaxDelay <= 0 {
		s.MaxDelay = 10 * time.Millisecond
	}
	if s.InlineLimit <= 0 {
		s.InlineLimit = DefaultInlineLimit
	}
	if s.RetryDeadline <= 0 {
		s.RetryDeadline = 60 * time.Second
	}
	if s.MaxOutstandingCalls <= 0 {
		s.MaxOutstandingCalls = 4
	}
	p := &Publisher{client: c, topic: topic, settings: s, done: make(chan struct{})}
	p.cond = sync.NewCond(&p.mu)
	var senders sync.WaitGroup
	for i := 0; i < s.MaxOutstandingCalls; i++ {
		senders.Add(1)
		go func() {
			defer senders.Done()
			p.run()
		}()
	}
	go func() {
		senders.Wait()
		close(p.done)
	}()
	return p
}

// Calls is how many Publish RPCs were made (retries included).
func (p *Publisher) Calls() int64 { return p.calls.Load() }

var errStopped = errors.New("pgbus: Publish after Stop")

// Publish queues m and returns at once, except for a payload above the
// inline limit (or a Reader), which is uploaded first, on the caller's
// goroutine, within ctx.
func (p *Publisher) Publish(ctx context.Context, m *Message) *PublishResult {
	result := &PublishResult{ready: make(chan struct{})}
	msg := &pb.PublishMessage{
		Attributes: m.Attributes, Priority: m.Priority, CorrelationId: m.CorrelationID,
		OrderingKey: m.OrderingKey, IdempotencyKey: m.IdempotencyKey, Ttl: Duration(m.TTL),
	}
	if msg.IdempotencyKey == "" {
		var b [16]byte
		_, _ = rand.Read(b[:])
		msg.IdempotencyKey = hex.EncodeToString(b[:])
	}
	if !m.DeliverAt.IsZero() {
		msg.DeliverAt = timestamppb.New(m.DeliverAt)
	}
	switch {
	case m.Reader != nil:
		up, err := p.client.Upload(ctx, p.topic, m.Reader)
		if err != nil {
			result.set("", err)
			return result
		}
		msg.PayloadHandle = up.GetPayloadHandle()
	case len(m.Data) > p.settings.InlineLimit:
		var up *pb.UploadPayloadResponse
		err := withRetries(ctx, p.settings.RetryDeadline, func(ctx context.Context) error {
			var err error
			up, err = p.client.Upload(ctx, p.topic, bytes.NewReader(m.Data))
			return err
		})
		if err != nil {
			result.set("", err)
			return result
		}
		msg.PayloadHandle = up.GetPayloadHandle()
	default:
		msg.Payload = m.Data
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		result.set("", errStopped)
		return result
	}
	p.queue = append(p.queue, pending{msg, result})
	p.bytes += len(msg.Payload)
	p.cond.Broadcast()
	return result
}

// Flush waits until everything published so far has been answered.
func (p *Publisher) Flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cond.Broadcast()
	// alone: a batch with an ordering key, taken from the queue, may still
	// be waiting for the calls before it.
	for len(p.queue) > 0 || p.inFlight > 0 || p.alone {
		p.cond.Wait()
	}
}

// Stop flushes and stops the publisher.
func (p *Publisher) Stop() {
	p.mu.Lock()
	p.stopped = true
	p.cond.Broadcast()
	p.mu.Unlock()
	<-p.done
}

// take waits for a full batch, MaxDelay after the first message, or Stop;
// returns it (nil: stopped and drained), and whether it holds an ordering
// key (then it is the only batch out).
func (p *Publisher) take() ([]pending, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		// Nothing is taken while a batch with an ordering key is out.
		for p.alone || (len(p.queue) == 0 && !p.stopped) {
			p.cond.Wait()
		}
		if len(p.queue) == 0 {
			return nil, false
		}
		deadline := time.Now().Add(p.settings.MaxDelay)
		for len(p.queue) < p.settings.MaxMessages && p.bytes < p.settings.MaxBytes && !p.stopped {
			left := time.Until(deadline)
			if left <= 0 {
				break
			}
			// sync.Cond has no timed wait: a timer wakes us.
			t := time.AfterFunc(left, func() {
				p.mu.Lock()
				p.cond.Broadcast()
				p.mu.Unlock()
			})
			p.cond.Wait()
			t.Stop()
		}
		if !p.alone && len(p.queue) > 0 {
			break
		} // else another sender took it meanwhile
	}
	n, size, keyed := 0, 0, false
	for n < len(p.queue) && n < p.settings.MaxMessages {
		b := len(p.queue[n].msg.Payload)
		if n > 0 && size+b > p.settings.MaxBytes {
			break
		}
		size += b
		keyed = keyed || p.queue[n].msg.OrderingKey != ""
		n++
	}
	batch := append([]pending(nil), p.queue[:n]...)
	p.queue = p.queue[n:]
	p.bytes -= size
	if keyed {
		// Sent once every call before it is answered, and alone.
		p.alone = true
		for p.inFlight > 0 {
			p.cond.Wait()
		}
	}
	p.inFlight++
	return batch, keyed
}

func (p *Publisher) run() {
	for {
		batch, alone := p.take()
		if batch == nil {
			return
		}
		msgs := make([]*pb.PublishMessage, len(batch))
		for i, b := range batch {
			msgs[i] = b.msg
		}
		var ids []string
		err := withRetries(context.Background(), p.settings.RetryDeadline,
			func(ctx context.Context) error {
				p.calls.Add(1)
				var err error
				ids, err = p.client.Publish(ctx, p.topic, msgs)
				return err
			})
		if err == nil && len(ids) != len(batch) {
			err = errors.New("pgbus: the server answered a different number of ids")
		}
		for i, b := range batch {
			if err != nil {
				b.result.set("", err)
			} else {
				b.result.set(ids[i], nil)
			}
		}
		p.mu.Lock()
		p.inFlight--
		if alone {
			p.alone = false
		}
		p.cond.Broadcast()
		p.mu.Unlock()
	}
}
