"""The Python client's figures for `make bench`: N messages of 1 KiB through
the batching Publisher, then received through a Subscriber and acked
without waiting (ack_async); the same program as bench/sdk_bench.cc (the C++ reference).

    PGBUS_SERVER=host:port PGBUS_API_KEY=... python bench.py N

Prints `publish_msgs_per_s=X consume_msgs_per_s=Y`.
"""

import sys
import threading
import time

import pgbus


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    with pgbus.Client() as client:
        topic = f"sdk-bench-python-{time.time_ns()}"
        client.create_topic(topic)
        client.create_subscription(topic + "-s", topic)
        payload = b"x" * 1024
        start = time.monotonic()
        with pgbus.Publisher(client, topic) as publisher:
            futures = [publisher.publish(payload) for _ in range(n)]
            for f in futures:
                f.result()
        publish = n / (time.monotonic() - start)

        # Handlers ack without waiting (ack_async): the Subscriber sends the
        # acks queued meanwhile in one call at a time. The figure ends when
        # every ack is answered.
        lock, received = threading.Lock(), threading.Event()
        acks: list = []

        def handle(message: pgbus.Message) -> None:
            with lock:
                acks.append(message.ack_async())
                if len(acks) == n:
                    received.set()

        start = time.monotonic()
        with pgbus.Subscriber(client, topic + "-s", handle):
            received.wait()
            if not all(f.result() for f in acks):
                sys.exit("an ack failed")
            consume = n / (time.monotonic() - start)
    print(f"publish_msgs_per_s={publish:.0f} consume_msgs_per_s={consume:.0f}")


if __name__ == "__main__":
    main()
