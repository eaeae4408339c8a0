// The TypeScript client's figures for `make bench`: N messages of 1 KiB
// through the batching publisher, then received through a subscriber and
// acked without awaiting each ack; the same program as bench/sdk_bench.cc (the C++
// reference).
//
//   PGBUS_SERVER=host:port PGBUS_API_KEY=... node dist/bench/bench.js N
//
// Prints `publish_msgs_per_s=X consume_msgs_per_s=Y`.
import { Client } from "../src/index";

async function main(): Promise<void> {
  const n = Number(process.argv[2] ?? 10000);
  const client = new Client();
  const topic = `sdk-bench-typescript-${process.hrtime.bigint()}`;
  await client.createTopic({ name: topic });
  await client.createSubscription({ name: `${topic}-s`, topic });
  const payload = Buffer.alloc(1024, "x");
  let start = performance.now();
  const publisher = client.publisher(topic);
  await Promise.all(Array.from({ length: n }, () => publisher.publish({ data: payload })));
  await publisher.close();
  const publish = n / ((performance.now() - start) / 1000);

  // Handlers do not await their acks: the subscriber sends the acks made
  // meanwhile in one call at a time. The figure ends when every ack is in.
  const stop = new AbortController();
  const acks: Promise<void>[] = [];
  start = performance.now();
  await client.subscriber(`${topic}-s`).receive(
    (m) => {
      if (acks.length < n) acks.push(m.ack());
      if (acks.length === n) stop.abort();
    },
    { signal: stop.signal },
  );
  await Promise.all(acks);
  const consume = n / ((performance.now() - start) / 1000);
  client.close();
  console.log(`publish_msgs_per_s=${publish.toFixed(0)} consume_msgs_per_s=${consume.toFixed(0)}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
