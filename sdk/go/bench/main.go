// The Go client's figures for `make bench`: N messages of 1 KiB through the
// batching Publisher, then received through a Subscriber and acked without
// waiting (AckAsync); the same program as bench/sdk_bench.cc (the C++ reference).
//
//	PGBUS_SERVER=host:port PGBUS_API_KEY=... go run ./bench N
//
// Prints `publish_msgs_per_s=X consume_msgs_per_s=Y`.
package main

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/pgbus/pgbus/sdk/go/pgbus"
	pb "github.com/pgbus/pgbus/sdk/go/pgbus/v1"
)

func main() {
	n := 10000
	if len(os.Args) > 1 {
		n, _ = strconv.Atoi(os.Args[1])
	}
	ctx := context.Background()
	client, err := pgbus.NewClient("")
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	topic := fmt.Sprintf("sdk-bench-go-%d", time.Now().UnixNano())
	if _, err := client.CreateTopic(ctx, &pb.Topic{Name: topic}); err != nil {
		log.Fatal(err)
	}
	if _, err := client.CreateSubscription(ctx, &pb.Subscription{Name: topic + "-s", Topic: topic}); err != nil {
		log.Fatal(err)
	}
	payload := bytes.Repeat([]byte("x"), 1024)
	start := time.Now()
	publisher := client.Publisher(topic, nil)
	results := make([]*pgbus.PublishResult, n)
	for i := range results {
		results[i] = publisher.Publish(ctx, &pgbus.Message{Data: payload})
	}
	for _, r := range results {
		if _, err := r.Get(ctx); err != nil {
			log.Fatal(err)
		}
	}
	publisher.Stop()
	publish := float64(n) / time.Since(start).Seconds()

	// Handlers ack without waiting (AckAsync): the Subscriber sends the acks
	// queued meanwhile in one call at a time. The figure ends when every ack
	// is answered.
	rctx, stop := context.WithCancel(ctx)
	acks := make(chan *pgbus.AckResult, n)
	var received atomic.Int64
	start = time.Now()
	go func() {
		for i := 0; i < n; i++ {
			if err := (<-acks).Get(ctx); err != nil {
				log.Fatal(err)
			}
		}
		stop()
	}()
	err = client.Subscriber(topic+"-s", nil).Receive(rctx, func(_ context.Context, m *pgbus.Received) {
		if received.Add(1) <= int64(n) {
			acks <- m.AckAsync()
		}
	})
	if err != nil {
		log.Fatal(err)
	}
	consume := float64(n) / time.Since(start).Seconds()
	fmt.Printf("publish_msgs_per_s=%.0f consume_msgs_per_s=%.0f\n", publish, consume)
}
