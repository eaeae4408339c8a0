package pgbus

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	pb "github.com/pgbus/pgbus/sdk/go/pgbus/v1"
)

// ReceiveSettings tune a Subscriber; zero fields take the defaults.
type ReceiveSettings struct {
	// At most this many messages / payload bytes are leased and unsettled
	// at once (the server's flow control); defaults 1000 and 100 MiB.
	MaxOutstandingMessages int64
	MaxOutstandingBytes    int64
	// The lease of each delivery; default 30 s. While a handler runs (or a
	// message is held unsettled) the lease is extended every AckDeadline/3,
	// up to MaxExtension in all (default 60 min).
	AckDeadline  time.Duration
	MaxExtension time.Duration
	// Handlers running at once; default 8.
	NumGoroutines int
}

// Received is one delivery. Settle it with Ack or Nack, in the handler or
// later; until then its lease is kept alive (up to MaxExtension).
type Received struct {
	AckID           string
	Message         *pb.Message
	DeliveryAttempt int32

	sub  *Subscriber
	once sync.Once
}

// ID is the message id.
func (m *Received) ID() string { return m.Message.GetId() }

// Attributes of the message.
func (m *Received) Attributes() map[string]string { return m.Message.GetAttributes() }

// Data is the payload: carried inline, or (uploaded payloads) retrieved in
// chunks and checked against the SHA-256 (*DataLossError on a mismatch).
func (m *Received) Data(ctx context.Context) ([]byte, error) {
	if !m.Message.GetPayloadByReference() {
		return m.Message.GetPayload(), nil
	}
	return m.sub.client.RetrieveBytes(ctx, m.Message.GetId())
}

// Ack acknowledges the message: nil, ErrLeaseExpired (it may come again),
// or the call's error. Only the first Ack or Nack counts. It waits for the
// answer: AckAsync().Get.
func (m *Received) Ack() error { return m.AckAsync().Get(context.Background()) }

// AckAsync acknowledges the message without waiting; the result gives what
// Ack would return. While Receive runs, a Subscriber's acks go in one Ack
// call at a time, and the next call carries every ack queued meanwhile (up
// to 1000): a handler that does not wait lets the Subscriber settle
// thousands of messages a second in few calls, where one that waits (Ack)
// holds its goroutine for a round trip. When Receive is not running, the
// ack is a call of its own, made before AckAsync returns.
func (m *Received) AckAsync() *AckResult {
	r := &AckResult{ready: make(chan struct{})}
	settled := true
	m.once.Do(func() {
		settled = false
		m.sub.forget(m.AckID)
		m.sub.queueAck(m.AckID, r)
	})
	if settled {
		r.set(ErrLeaseExpired)
	}
	return r
}

// Nack gives the message back for redelivery after the subscription's
// backoff, with an optional reason (kept for dead letters).
func (m *Received) Nack(reason string) error {
	err := ErrLeaseExpired
	m.once.Do(func() {
		m.sub.forget(m.AckID)
		st, cerr := m.sub.client.ModifyAckDeadline(context.Background(), m.sub.name,
			[]string{m.AckID}, 0, reason)
		err = outcome(st, cerr, 0, 1)
	})
	return err
}

// AckResult is the answer to an AckAsync.
type AckResult struct {
	ready chan struct{}
	err   error
}

func (r *AckResult) set(err error) {
	r.err = err
	close(r.ready)
}

// Ready is closed once the answer is in.
func (r *AckResult) Ready() <-chan struct{} { return r.ready }

// Get waits for the answer (or for ctx): nil, ErrLeaseExpired, or the
// call's error.
func (r *AckResult) Get(ctx context.Context) error {
	select {
	case <-r.ready:
		return r.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// outcome is what became of the i-th of the n ack ids of a call (an answer
// without one status per id settles none of them).
func outcome(st []pb.AckStatus, err error, i, n int) error {
	switch {
	case err != nil:
		return err
	case len(st) == n && st[i] == pb.AckStatus_ACK_STATUS_OK:
		return nil
	default:
		return ErrLeaseExpired
	}
}

// maxAcksPerCall: the server takes 10000 ids a call; 1000 keeps a call's
// statement and answer short.
const maxAcksPerCall = 1000

type pendingAck struct {
	id  string
	res *AckResult
}

// Subscriber receives from one subscription.
type Subscriber struct {
	client   *Client
	name     string
	settings ReceiveSettings

	mu     sync.Mutex
	leased map[string]time.Time // ack id -> when received
	// Reconnects counts the streams opened again after one ended.
	reconnects int
	// Acks queued for the acker, which runs while Receive does
	// (ackerOn); ackWake tells it of new ones and of its end.
	acks        []pendingAck
	ackerOn     bool
	ackerEnding bool
	ackWake     *sync.Cond
	ackCalls    int
}

// Subscriber returns a subscriber of subscription; call Receive.
func (c *Client) Subscriber(subscription string, settings *ReceiveSettings) *Subscriber {
	s := ReceiveSettings{}
	if settings != nil {
		s = *settings
	}
	if s.MaxOutstandingMessages <= 0 {
		s.MaxOutstandingMessages = 1000
	}
	if s.MaxOutstandingBytes <= 0 {
		s.MaxOutstandingBytes = 100 << 20
	}
	if s.AckDeadline <= 0 {
		s.AckDeadline = 30 * time.Second
	}
	if s.MaxExtension <= 0 {
		s.MaxExtension = time.Hour
	}
	if s.NumGoroutines <= 0 {
		s.NumGoroutines = 8
	}
	sub := &Subscriber{client: c, name: subscription, settings: s, leased: map[string]time.Time{}}
	sub.ackWake = sync.NewCond(&sub.mu)
	return sub
}

// AckCalls is how many Ack calls the Subscriber has sent (each carries the
// acks queued while the one before it was out).
func (s *Subscriber) AckCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ackCalls
}

// queueAck hands the ack to the acker, or acks at once when Receive is
// not running.
func (s *Subscriber) queueAck(id string, r *AckResult) {
	s.mu.Lock()
	if s.ackerOn {
		s.acks = append(s.acks, pendingAck{id, r})
		s.ackWake.Signal()
		s.mu.Unlock()
		return
	}
	s.ackCalls++
	s.mu.Unlock()
	st, err := s.client.Ack(context.Background(), s.name, []string{id})
	r.set(outcome(st, err, 0, 1))
}

// sendAcks sends the queued acks, one call at a time, until the acker is
// told to end and nothing is queued.
func (s *Subscriber) sendAcks() {
	for {
		s.mu.Lock()
		for len(s.acks) == 0 && !s.ackerEnding {
			s.ackWake.Wait()
		}
		if len(s.acks) == 0 {
			s.ackerOn = false
			s.mu.Unlock()
			return
		}
		n := min(len(s.acks), maxAcksPerCall)
		batch := s.acks[:n:n]
		s.acks = s.acks[n:]
		s.ackCalls++
		s.mu.Unlock()
		ids := make([]string, n)
		for i, a := range batch {
			ids[i] = a.id
		}
		st, err := s.client.Ack(context.Background(), s.name, ids)
		for i, a := range batch {
			a.res.set(outcome(st, err, i, n))
		}
	}
}

// Reconnects is how many times the stream was opened again after it ended.
func (s *Subscriber) Reconnects() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reconnects
}

func (s *Subscriber) forget(ackID string) {
	s.mu.Lock()
	delete(s.leased, ackID)
	s.mu.Unlock()
}

// Receive calls handler for each message, on up to NumGoroutines
// goroutines, until ctx is done (then it waits for running handlers and
// returns nil) or the server refuses the subscription for good
// (NOT_FOUND, PERMISSION_DENIED, ...: that error). A stream that ends
// otherwise (a replica stopping: UNAVAILABLE) is opened again with backoff.
// A handler that returns without settling its message leaves it leased
// (extended up to MaxExtension) for a later Ack or Nack.
func (s *Subscriber) Receive(ctx context.Context, handler func(context.Context, *Received)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.mu.Lock()
	s.ackerOn, s.ackerEnding = true, false
	s.mu.Unlock()
	acker := make(chan struct{})
	go func() {
		defer close(acker)
		s.sendAcks()
	}()
	work := make(chan *Received)
	var handlers sync.WaitGroup
	for i := 0; i < s.settings.NumGoroutines; i++ {
		handlers.Add(1)
		go func() {
			defer handlers.Done()
			for m := range work {
				handler(ctx, m)
			}
		}()
	}
	// Leases are kept until the handlers still running when ctx ends have
	// returned.
	leaseCtx, stopLeases := context.WithCancel(context.Background())
	leaser := make(chan struct{})
	go func() {
		defer close(leaser)
		s.extendLeases(leaseCtx)
	}()
	err := s.stream(ctx, work)
	close(work)
	handlers.Wait()
	stopLeases()
	<-leaser
	// The acks the handlers queued are sent before Receive returns.
	s.mu.Lock()
	s.ackerEnding = true
	s.ackWake.Signal()
	s.mu.Unlock()
	<-acker
	return err
}

func (s *Subscriber) stream(ctx context.Context, work chan<- *Received) error {
	req := &pb.SubscribeRequest{
		Subscription:           s.name,
		MaxOutstandingMessages: s.settings.MaxOutstandingMessages,
		MaxOutstandingBytes:    s.settings.MaxOutstandingBytes,
		AckDeadline:            Duration(s.settings.AckDeadline),
	}
	backoff := 100 * time.Millisecond
	for {
		stream, err := s.client.Bus.Subscribe(ctx, req)
		for err == nil {
			var resp *pb.SubscribeResponse
			resp, err = stream.Recv()
			if err != nil {
				break
			}
			backoff = 100 * time.Millisecond
			for _, r := range resp.GetMessages() {
				m := &Received{AckID: r.GetAckId(), Message: r.GetMessage(),
					DeliveryAttempt: r.GetDeliveryAttempt(), sub: s}
				s.mu.Lock()
				s.leased[m.AckID] = time.Now()
				s.mu.Unlock()
				select {
				case work <- m:
				case <-ctx.Done():
					// Received but never handed to a handler: give it
					// back now rather than when its lease runs out.
					_ = m.Nack("subscriber stopped")
					return nil
				}
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		if permanent(err) {
			return err
		}
		// The stream ended (a replica stopping): open it again.
		s.mu.Lock()
		s.reconnects++
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff/2 + time.Duration(rand.Int64N(int64(backoff/2)+1))):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// extendLeases keeps the leases of unsettled messages alive every
// AckDeadline/2 while they are younger than MaxExtension, until ctx ends.
func (s *Subscriber) extendLeases(ctx context.Context) {
	// A third of the deadline: two extensions may be late before a lease lapses.
	interval := max(s.settings.AckDeadline/3, 200*time.Millisecond)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		var ids []string
		s.mu.Lock()
		for id, since := range s.leased {
			if now.Sub(since) < s.settings.MaxExtension {
				ids = append(ids, id)
			} else {
				delete(s.leased, id) // given up: its lease runs out
			}
		}
		s.mu.Unlock()
		if len(ids) > 0 {
			// A failure is retried next round; a lost lease shows at Ack.
			_, _ = s.client.ModifyAckDeadline(ctx, s.name, ids, s.settings.AckDeadline, "")
		}
	}
}
