// The shared scenarios of sdk/conformance/scenarios.md against a live
// pgbusd; each test names its scenario.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { test as nodeTest, type TestContext } from "node:test";
import * as grpc from "@grpc/grpc-js";

import {
  Client,
  Code,
  DataLossError,
  durationMs,
  LeaseExpiredError,
  PgbusError,
  type ClientOptions,
  type ReceivedMessage,
  type ReceiveSettings,
} from "../src/index";
import { operator, randomName, Server, sleep, sql, startServer, tempDir, waitFor } from "./harness";

// Each scenario fails after a minute rather than hanging the suite.
function test(name: string, fn: (t: TestContext) => Promise<void>): void {
  nodeTest(name, { timeout: 60_000 }, fn);
}

async function serve(t: TestContext, options = {}): Promise<Server> {
  const s = await startServer(options);
  t.after(() => s.stop());
  return s;
}

function connect(t: TestContext, s: Server, options: ClientOptions = {}): Client {
  const c = new Client({ target: s.target, ...options });
  t.after(() => c.close());
  return c;
}

async function topicWithSubscription(c: Client, name: string, topic: string, extra = {}) {
  await c.createTopic({ name: topic });
  await c.createSubscription({ name, topic, ...extra });
}

/**
 * Collects what receive()'s handler is given, acking unless told otherwise,
 * and tracks how many handlers held an unsettled message at once.
 */
class Inbox {
  got: ReceivedMessage[] = [];
  concurrent = 0;
  maxConcurrent = 0;
  constructor(
    private readonly holdMs = 0,
    private readonly settle: (m: ReceivedMessage) => Promise<void> = (m) => m.ack(),
  ) {}
  handle = async (m: ReceivedMessage) => {
    this.concurrent++;
    this.maxConcurrent = Math.max(this.maxConcurrent, this.concurrent);
    await sleep(this.holdMs);
    // Counted down before the message is settled: once it is, the server
    // may hand its credit to the next message at once.
    this.concurrent--;
    await this.settle(m);
    this.got.push(m);
  };
}

/** Runs a subscriber until `n` messages were handled (or the timeout), then stops it. */
async function receive(
  c: Client,
  subscription: string,
  settings: ReceiveSettings,
  inbox: Inbox,
  n: number,
  timeoutMs: number,
): Promise<ReceivedMessage[]> {
  const stop = new AbortController();
  const session = c.subscriber(subscription, settings).receive(inbox.handle, { signal: stop.signal });
  let failed: unknown;
  session.catch((e) => (failed = e));
  await waitFor(() => inbox.got.length >= n || failed !== undefined, timeoutMs);
  stop.abort();
  await session;
  return [...inbox.got];
}

test("round trip with attributes, priority and correlation id", async (t) => {
  const c = connect(t, await serve(t));
  await topicWithSubscription(c, "s", "t");
  const pub = c.publisher("t");
  const low = pub.publish({ data: "low" });
  const high = pub.publish({
    data: "high",
    priority: 5,
    attributes: { kind: "order" },
    correlationId: "req-1",
  });
  await pub.close();
  const highId = await high;
  await low;
  const got = await receive(c, "s", {}, new Inbox(), 2, 15_000);
  assert.equal(got.length, 2);
  const byData = new Map<string, ReceivedMessage>();
  for (const m of got) {
    byData.set((await m.data()).toString(), m);
    assert.equal(m.deliveryAttempt, 1);
  }
  const h = byData.get("high")!;
  assert.ok(h && byData.get("low"));
  assert.equal(h.message.priority, 5);
  assert.equal(h.attributes.kind, "order");
  assert.equal(h.message.correlationId, "req-1");
  assert.equal(h.id, highId);
});

test("batching makes far fewer calls", async (t) => {
  const s = await serve(t);
  const c = connect(t, s);
  await c.createTopic({ name: "t" });
  const pub = c.publisher("t", { maxMessages: 100, maxDelayMs: 50 });
  const results = Array.from({ length: 1000 }, (_, i) => pub.publish({ data: String(i) }));
  await pub.flush();
  const ids = new Set(await Promise.all(results));
  await pub.close();
  assert.equal(ids.size, 1000);
  assert.equal(sql(s.tenant, "SELECT count(*) FROM pgbus.messages"), "1000");
  assert.ok(pub.calls <= 50, `${pub.calls} Publish calls for 1000 messages`);
});

test("ordering key keeps its order through batches", async (t) => {
  const c = connect(t, await serve(t));
  await topicWithSubscription(c, "s", "t");
  const pub = c.publisher("t", { maxMessages: 7 });
  const all = Array.from({ length: 50 }, (_, i) => pub.publish({ data: String(i), orderingKey: "k" }));
  await pub.close();
  await Promise.all(all);
  const got = await receive(c, "s", { concurrency: 1 }, new Inbox(), 50, 20_000);
  assert.equal(got.length, 50);
  got.forEach((m, i) => assert.equal(m.message.payload.toString(), String(i), `message ${i} out of order`));
});

test("nack redelivers with attempt two", async (t) => {
  const c = connect(t, await serve(t));
  await topicWithSubscription(c, "s", "t");
  await c.publish("t", [{ payload: Buffer.from("x") }]);
  const inbox = new Inbox(0, (m) => (m.deliveryAttempt === 1 ? m.nack("try again") : m.ack()));
  const got = await receive(c, "s", {}, inbox, 2, 15_000);
  assert.deepEqual(
    got.map((m) => m.deliveryAttempt),
    [1, 2],
  );
});

// Not a shared scenario: the iterator form of the subscriber.
test("acks that are not awaited share calls", async (t) => {
  const c = connect(t, await serve(t));
  await topicWithSubscription(c, "s", "t");
  const n = 500;
  const pub = c.publisher("t");
  const published = Array.from({ length: n }, (_, i) => pub.publish({ data: String(i) }));
  await pub.close();
  await Promise.all(published);
  const acks: Promise<void>[] = [];
  let first: ReceivedMessage | undefined; // left unsettled, acked after receive() ended
  const inbox = new Inbox(0, async (m) => {
    if (m.message.payload.toString() === "0") first = m;
    else acks.push(m.ack()); // not awaited
  });
  const subscriber = c.subscriber("s");
  const stop = new AbortController();
  const session = subscriber.receive(inbox.handle, { signal: stop.signal });
  await waitFor(() => inbox.got.length >= n, 30_000);
  assert.equal(acks.length, n - 1);
  await Promise.all(acks);
  // One call at a time, each carrying what was acked meanwhile: far fewer
  // calls than acks (one each would be 499).
  assert.ok(subscriber.ackCalls <= n / 4, `${subscriber.ackCalls} Ack calls for ${n - 1} acks`);
  // Settled once, whichever way.
  const again = inbox.got.find((m) => m.message.payload.toString() === "1")!;
  await assert.rejects(again.ack(), LeaseExpiredError);
  stop.abort();
  await session;
  assert.ok(first, "message 0 was not delivered");
  await first.ack();
  const stats = await c.getStats({ subscription: "s" });
  assert.equal(Number(stats.pending) + Number(stats.inFlight), 0, "every message acked");
});

test("messages() is an async iterator; leaving it gives back what was not yielded", async (t) => {
  const c = connect(t, await serve(t));
  await topicWithSubscription(c, "s", "t", { ackDeadline: durationMs(1000) });
  await c.publish("t", Array.from({ length: 5 }, (_, i) => ({ payload: Buffer.from(String(i)) })));
  const seen: string[] = [];
  for await (const m of c.subscriber("s", { ackDeadlineMs: 1000 }).messages()) {
    seen.push(m.message.payload.toString());
    if (seen.length === 3) break; // the third is left unsettled: its lease runs out
    await m.ack();
  }
  assert.deepEqual(seen, ["0", "1", "2"]);
  const rest = await receive(c, "s", {}, new Inbox(), 3, 15_000);
  assert.deepEqual(rest.map((m) => m.message.payload.toString()).sort(), ["2", "3", "4"]);
});

test("a slow handler keeps its lease", async (t) => {
  const c = connect(t, await serve(t));
  await topicWithSubscription(c, "s", "t", { ackDeadline: durationMs(1000) });
  await c.publish("t", [{ payload: Buffer.from("slow") }]);
  // The ack after 3 s must succeed: a lost lease rejects it.
  const inbox = new Inbox(3000, (m) => m.ack());
  // Runs a while longer than the handler: a lost lease would redeliver.
  const got = await receive(c, "s", { ackDeadlineMs: 1000 }, inbox, 2, 5000);
  assert.equal(got.length, 1, "delivered more than once");
});

test("flow control caps outstanding messages", async (t) => {
  const c = connect(t, await serve(t));
  await topicWithSubscription(c, "s", "t");
  await c.publish(
    "t",
    Array.from({ length: 20 }, (_, i) => ({ payload: Buffer.from(String(i)) })),
  );
  const inbox = new Inbox(200);
  const got = await receive(c, "s", { maxOutstandingMessages: 3, concurrency: 10 }, inbox, 20, 30_000);
  assert.equal(got.length, 20);
  assert.ok(inbox.maxConcurrent <= 3, `${inbox.maxConcurrent} handlers at once with at most 3 outstanding`);
});

test("large payload round trip, checked", async (t) => {
  const c = connect(t, await serve(t));
  await topicWithSubscription(c, "s", "t");
  const data = randomBytes(8 << 20);
  const pub = c.publisher("t");
  const id = await pub.publish({ data });
  await pub.close();
  const got = await receive(c, "s", {}, new Inbox(), 1, 15_000);
  assert.equal(got.length, 1);
  assert.equal(got[0].id, id);
  assert.ok(got[0].message.payloadByReference);
  assert.ok((await got[0].data()).equals(data), "the payload came back different");
});

test("data loss is a typed error", async (t) => {
  const s = await serve(t);
  const c = connect(t, s);
  await c.createTopic({ name: "files" });
  const pub = c.publisher("files");
  const id = await pub.publish({ data: randomBytes(3 << 20) });
  await pub.close();
  sql(s.tenant, String.raw`UPDATE pgbus.payload_chunks SET data = overlay(data placing '\x00ff'::bytea from 7) WHERE seq = 1`);
  await assert.rejects(c.retrieveBytes(id), (err: unknown) => {
    assert.ok(err instanceof DataLossError, `${err}`);
    assert.equal(err.code, Code.DATA_LOSS);
    return true;
  });
});

/**
 * An interceptor of the Publish calls (the others pass untouched): `onStart`
 * runs as one starts; `onStatus` sees its status and returns the one the
 * caller gets.
 */
function onPublish(hooks: {
  onStart?: () => void;
  onStatus?: (status: grpc.StatusObject) => grpc.StatusObject;
}): grpc.Interceptor {
  return (options, next) => {
    if (!options.method_definition.path.endsWith("/Publish")) {
      return new grpc.InterceptingCall(next(options));
    }
    const requester = new grpc.RequesterBuilder()
      .withStart((metadata, listener, nextStart) => {
        hooks.onStart?.();
        const answer = new grpc.ListenerBuilder()
          .withOnReceiveStatus((status, nextStatus) =>
            nextStatus(hooks.onStatus ? hooks.onStatus(status) : status),
          )
          .build();
        nextStart(metadata, answer);
      })
      .build();
    return new grpc.InterceptingCall(next(options), requester);
  };
}

test("batches without ordering keys are pipelined and keyed ones go alone", async (t) => {
  const s = await serve(t);
  // The Publish calls out at once, and the most seen.
  let out = 0;
  let most = 0;
  const count = onPublish({
    onStart: () => {
      most = Math.max(most, ++out);
    },
    onStatus: (status) => {
      out--;
      return status;
    },
  });
  const c = connect(t, s, { channelOptions: { interceptors: [count] } });
  await c.createTopic({ name: "t" });
  let pub = c.publisher("t", { maxMessages: 10 });
  await Promise.all(Array.from({ length: 2000 }, () => pub.publish({ data: "x" })));
  await pub.close();
  assert.ok(most >= 2 && most <= 4, `at most ${most} Publish calls out at once, want 2..4`);
  // Every 5th message keyed, 10 a batch: every batch holds a key, so each goes alone.
  most = 0;
  pub = c.publisher("t", { maxMessages: 10 });
  const keyed = Array.from({ length: 200 }, (_, i) =>
    pub.publish({ data: String(i), orderingKey: i % 5 === 0 ? "k" : "" }),
  );
  await pub.close();
  await Promise.all(keyed);
  assert.equal(most, 1, "a batch with an ordering key was not sent alone");
});

test("a retried publish is stored once", async (t) => {
  const s = await serve(t);
  let publishes = 0;
  // Lets the first Publish reach the server and commit, then reports
  // UNAVAILABLE, as if its answer was lost.
  const lose = onPublish({
    onStatus: (status) =>
      ++publishes === 1 && status.code === grpc.status.OK
        ? { ...status, code: grpc.status.UNAVAILABLE, details: "the answer was lost" }
        : status,
  });
  const c = connect(t, s, { channelOptions: { interceptors: [lose] } });
  await c.createTopic({ name: "t" });
  const pub = c.publisher("t");
  const id = await pub.publish({ data: "charge 42" });
  await pub.close();
  assert.equal(publishes, 2, "the first answer lost, then one retry");
  assert.equal(sql(s.tenant, "SELECT count(*) FROM pgbus.messages"), "1");
  assert.equal(sql(s.tenant, "SELECT id FROM pgbus.messages"), id);
});

test("the subscriber reconnects after a restart and misses nothing", async (t) => {
  const s = await serve(t);
  const c = connect(t, s);
  await topicWithSubscription(c, "s", "t");
  const sub = c.subscriber("s");
  const inbox = new Inbox();
  const stop = new AbortController();
  const session = sub.receive(inbox.handle, { signal: stop.signal });
  await c.publish("t", [{ payload: Buffer.from("before") }]);
  assert.ok(await waitFor(() => inbox.got.length === 1, 10_000), "nothing before the restart");
  await s.stop("SIGTERM");
  await s.start(); // same port
  // The publisher retries while the replica comes back.
  const pub = c.publisher("t");
  await pub.publish({ data: "after" });
  await pub.close();
  const both = await waitFor(() => inbox.got.length >= 2, 20_000);
  stop.abort();
  await session;
  assert.ok(both, `received ${inbox.got.length} of 2`);
  assert.deepEqual(inbox.got.map((m) => m.message.payload.toString()).sort(), ["after", "before"]);
  assert.ok(sub.reconnects >= 1, "the subscriber never reconnected");
});

test("auth errors are typed", async (t) => {
  const s = await serve(t, { auth: true });
  const tenant = randomName("ts-auth-");
  operator("tenant", "create", tenant);
  const key = operator("key", "issue", tenant, "--scopes", "publish", "--topics", "orders");
  const bad = connect(t, s, { apiKey: "pgbus_0000000000000000_nope" });
  await assert.rejects(bad.createTopic({ name: "orders" }), (err: unknown) => {
    assert.ok(err instanceof PgbusError);
    assert.equal(err.code, Code.UNAUTHENTICATED);
    return true;
  });
  const publishOnly = connect(t, s, { apiKey: key });
  await assert.rejects(publishOnly.createTopic({ name: "orders" }), (err: unknown) => {
    assert.ok(err instanceof PgbusError);
    assert.equal(err.code, Code.PERMISSION_DENIED);
    assert.match(err.details, /admin/);
    return true;
  });
});

test("TLS", async (t) => {
  const dir = tempDir();
  const run = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "ignore" });
  const curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  run("req", "-x509", ...curve, "-days", "1", "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=pgbus-ts-ca");
  run("req", ...curve, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost");
  writeFileSync(join(dir, "server.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
  run("x509", "-req", "-days", "1", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
    "-CAcreateserial", "-out", "server.pem", "-extfile", "server.ext");
  const s = await serve(t, {
    args: ["--tls-cert-file", join(dir, "server.pem"), "--tls-key-file", join(dir, "server.key")],
  });
  const trusted = connect(t, s, { tls: { rootCerts: readFileSync(join(dir, "ca.pem")) } });
  const topic = await trusted.createTopic({ name: "secure" });
  assert.equal(topic.name, "secure");
  // The system's CAs do not know this one: the handshake fails.
  const untrusted = connect(t, s, { tls: true, timeoutMs: 3000 });
  await assert.rejects(untrusted.getTopic("secure"), (err: unknown) => {
    assert.ok(err instanceof PgbusError);
    assert.equal(err.code, Code.UNAVAILABLE);
    return true;
  });
});

// The README's quick start is a whole program: it is compiled and run
// against the server, and must print what the README says it prints.
test("README quick start runs", async (t) => {
  const s = await serve(t);
  const sdk = resolve(__dirname, "../..");
  const readme = readFileSync(join(sdk, "README.md"), "utf8");
  const m = /```ts\n([\s\S]*?)```/.exec(readme);
  assert.ok(m, "no ```ts block in sdk/typescript/README.md");
  const dir = tempDir();
  // The program imports "@pgbus/client": this package, built.
  mkdirSync(join(dir, "node_modules", "@pgbus"), { recursive: true });
  symlinkSync(sdk, join(dir, "node_modules", "@pgbus", "client"));
  writeFileSync(join(dir, "main.ts"), m[1]);
  writeFileSync(
    join(dir, "tsconfig.json"),
    JSON.stringify({
      compilerOptions: {
        target: "ES2022", module: "node16", moduleResolution: "node16", strict: true,
        esModuleInterop: true, skipLibCheck: true, types: ["node"],
        typeRoots: [join(sdk, "node_modules", "@types")],
      },
      files: ["main.ts"],
    }),
  );
  execFileSync(process.execPath, [join(sdk, "node_modules", "typescript", "bin", "tsc"), "-p", dir]);
  const out = execFileSync(process.execPath, [join(dir, "main.js")], {
    env: { ...process.env, PGBUS_SERVER: s.target },
    timeout: 60_000,
  })
    .toString()
    .trim()
    .split("\n")
    .sort();
  assert.equal(out.length, 2, `the quick start printed:\n${out.join("\n")}`);
  assert.match(out[0], /^published \d+$/);
  assert.equal(out[1], "received hello");
});

test("admin calls cover the proto", async (t) => {
  const c = connect(t, await serve(t));
  await c.createTopic({
    name: "orders",
    retention: durationMs(3_600_000),
    dedupWindow: durationMs(300_000),
    maxMessageBytes: 4096,
  });
  await c.createTopic({ name: "dead" });
  const orders = await c.getTopic("orders");
  assert.equal(orders.retention?.seconds, 3600);
  assert.equal(orders.dedupWindow?.seconds, 300);
  assert.equal(orders.maxMessageBytes, 4096);
  const names: string[] = [];
  let pageToken = "";
  let pages = 0;
  do {
    const page = await c.listTopics({ pageSize: 1, pageToken });
    names.push(...page.topics.map((x) => x.name));
    pageToken = page.nextPageToken;
    pages++;
  } while (pageToken);
  assert.deepEqual(names.sort(), ["dead", "orders"]);
  assert.ok(pages >= 2, `${pages} pages`);
  await c.createSubscription({
    name: "billing",
    topic: "orders",
    ackDeadline: durationMs(10_000),
    maxDeliveryAttempts: 2,
    deadLetterTopic: "dead",
    minBackoff: durationMs(100),
  });
  const billing = await c.getSubscription("billing");
  assert.equal(billing.ackDeadline?.seconds, 10);
  assert.equal(billing.maxDeliveryAttempts, 2);
  assert.equal(billing.deadLetterTopic, "dead");
  const subs = await c.listSubscriptions({ topic: "orders" });
  assert.deepEqual(
    subs.subscriptions.map((s) => s.name),
    ["billing"],
  );
  const [id] = await c.publish("orders", [{ payload: Buffer.from("x"), correlationId: "c-1" }]);
  const found = await c.listMessages({ correlationId: "c-1" });
  assert.deepEqual(
    found.messages.map((m) => m.id),
    [id],
  );

  // Seek: a subscription created after the publish has nothing, until it
  // is sought back before it.
  await c.createSubscription({ name: "replay", topic: "orders" });
  assert.equal((await c.getStats({ subscription: "replay" })).pending, 0);
  await c.seek("replay", new Date(Date.now() - 60_000));
  assert.equal((await c.getStats({ subscription: "replay" })).pending, 1);

  // Dead letters: nacked on both attempts allowed. The subscriber stays
  // open: the move happens when the subscription is next claimed.
  const stop = new AbortController();
  const session = c.subscriber("billing").receive((m) => m.nack("cannot bill"), { signal: stop.signal });
  let dead: Awaited<ReturnType<Client["listDeadLetters"]>>["messages"] = [];
  await waitFor(async () => {
    dead = (await c.listDeadLetters({ subscription: "billing" })).messages;
    return dead.length > 0;
  }, 20_000);
  stop.abort();
  await session;
  assert.equal(dead.length, 1);
  assert.equal(dead[0].attributes["pgbus.dead_letter.message_id"], id);
  assert.equal((await c.redriveDeadLetters({ subscription: "billing", limit: 10 })).length, 1);
  assert.equal((await c.getStats({ subscription: "billing" })).deadLettered, 1);
});
