// The batching publisher: many publish() calls, few Publish RPCs, a few
// batches in flight at once (a batch with an ordering key alone), retried
// whole without duplicates.
import { randomBytes } from "node:crypto";

import { PublishMessage } from "./gen/pgbus/v1/types";
import { type Client, DEFAULT_INLINE_LIMIT, durationMs, withRetries } from "./client";
import { PgbusError, toPgbusError } from "./errors";
import { status } from "@grpc/grpc-js";

/** What a Publisher publishes. */
export interface OutgoingMessage {
  /** The payload (a string is sent as UTF-8). */
  data?: Uint8Array | string;
  /**
   * The payload as a stream instead of `data`: uploaded in chunks, never
   * held in memory whole (not retried: it cannot be read twice).
   */
  source?: AsyncIterable<Uint8Array>;
  attributes?: Record<string, string>;
  priority?: number;
  correlationId?: string;
  orderingKey?: string;
  /** A random one is generated when unset, so that a retried batch is stored once. */
  idempotencyKey?: string;
  ttlMs?: number;
  deliverAt?: Date;
}

export interface PublishSettings {
  /** Messages per Publish call; default 100 (the server takes up to 1000). */
  maxMessages?: number;
  /** Payload bytes per call; default 1 MiB. */
  maxBytes?: number;
  /** How long a message waits for its batch to fill; default 10 ms. */
  maxDelayMs?: number;
  /** Larger payloads are uploaded; default DEFAULT_INLINE_LIMIT. */
  inlineLimit?: number;
  /** How long a batch is retried; default 60 s. */
  retryDeadlineMs?: number;
  /**
   * Publish calls out at once; default 4. A batch holding an ordering key
   * is sent alone (after the calls before it are answered, before any
   * after it).
   */
  maxOutstandingCalls?: number;
}

interface Pending {
  msg: PublishMessage;
  bytes: number;
  queuedAt: number;
  /** False while its payload is being uploaded: batches stop before it. */
  ready: boolean;
  failed: boolean;
  resolve: (id: string) => void;
  reject: (err: PgbusError) => void;
}

/**
 * Batches the messages of one topic. Batches are formed in the order
 * publish() was called and sent up to maxOutstandingCalls at once; a batch
 * that holds an ordering key is sent alone, once the calls before it are
 * answered, and is retried whole before the next is sent, so an ordering
 * key keeps its order through batching and retries. A batch that fails
 * with UNAVAILABLE or DEADLINE_EXCEEDED (its first attempt may have been
 * stored with the answer lost) is retried for retryDeadlineMs; every
 * message carries an idempotency key, so it is stored once and the retry
 * answers the original ids.
 */
export class Publisher {
  private readonly settings: Required<PublishSettings>;
  private queue: Pending[] = [];
  private queuedBytes = 0;
  private inFlight = 0;
  /** A batch with an ordering key is out: nothing else is sent. */
  private alone = false;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private idle: Array<() => void> = [];
  private rpcs = 0;

  constructor(
    private readonly client: Client,
    readonly topic: string,
    settings: PublishSettings = {},
  ) {
    this.settings = {
      maxMessages: settings.maxMessages || 100,
      maxBytes: settings.maxBytes || 1 << 20,
      maxDelayMs: settings.maxDelayMs || 10,
      inlineLimit: settings.inlineLimit || DEFAULT_INLINE_LIMIT,
      retryDeadlineMs: settings.retryDeadlineMs || 60_000,
      maxOutstandingCalls: settings.maxOutstandingCalls || 4,
    };
  }

  /** Publish RPCs made so far (retries included). */
  get calls(): number {
    return this.rpcs;
  }

  /**
   * Queues a message; resolves to its id once its batch is stored. A
   * payload above the inline limit (or a `source`) is uploaded first; later
   * messages wait behind it, so order is kept.
   */
  publish(m: OutgoingMessage): Promise<string> {
    if (this.closed) {
      return Promise.reject(new PgbusError(status.FAILED_PRECONDITION, "publish after close()"));
    }
    const data = typeof m.data === "string" ? Buffer.from(m.data) : Buffer.from(m.data ?? []);
    const msg = PublishMessage.fromPartial({
      attributes: m.attributes ?? {},
      priority: m.priority ?? 0,
      correlationId: m.correlationId ?? "",
      orderingKey: m.orderingKey ?? "",
      idempotencyKey: m.idempotencyKey || randomBytes(16).toString("hex"),
      ttl: m.ttlMs ? durationMs(m.ttlMs) : undefined,
      deliverAt: m.deliverAt,
    });
    return new Promise<string>((resolve, reject) => {
      const p: Pending = {
        msg,
        bytes: 0,
        queuedAt: Date.now(),
        ready: true,
        failed: false,
        resolve,
        reject,
      };
      const upload = m.source
        ? () => this.client.upload(this.topic, m.source!)
        : data.length > this.settings.inlineLimit
          ? () => withRetries(() => this.client.upload(this.topic, data), this.settings.retryDeadlineMs)
          : undefined;
      if (upload) {
        p.ready = false;
        upload().then(
          (up) => {
            msg.payloadHandle = up.payloadHandle;
            p.ready = true;
            this.kick();
          },
          (err) => {
            p.failed = true;
            p.ready = true;
            reject(toPgbusError(err));
            this.kick();
          },
        );
      } else {
        msg.payload = data;
        p.bytes = data.length;
      }
      this.queue.push(p);
      this.queuedBytes += p.bytes;
      this.kick();
    });
  }

  /** Resolves once everything published so far has been answered. */
  flush(): Promise<void> {
    if (this.queue.length === 0 && this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => {
      this.idle.push(resolve);
      this.kick(true);
    });
  }

  /** Flushes, then refuses further publishes. */
  async close(): Promise<void> {
    this.closed = true;
    await this.flush();
  }

  /** Sends what is due; `now` sends a partial batch without waiting. */
  private kick(now = false): void {
    while (!this.alone && this.inFlight < this.settings.maxOutstandingCalls) {
      // Uploads that failed are dropped where they stand (already rejected).
      while (this.queue.length > 0 && this.queue[0].failed) this.queue.shift();
      if (this.queue.length === 0) {
        if (this.inFlight === 0) this.wakeIdle();
        return;
      }
      if (!this.queue[0].ready) return; // its upload kicks again
      const waited = Date.now() - this.queue[0].queuedAt;
      const due =
        now ||
        this.closed ||
        this.idle.length > 0 ||
        this.queue.length >= this.settings.maxMessages ||
        this.queuedBytes >= this.settings.maxBytes ||
        waited >= this.settings.maxDelayMs;
      if (!due) {
        if (!this.timer) {
          this.timer = setTimeout(() => {
            this.timer = undefined;
            this.kick();
          }, this.settings.maxDelayMs - waited);
        }
        return;
      }
      const n = this.batchLength();
      const keyed = this.queue.slice(0, n).some((p) => p.msg.orderingKey !== "");
      // Sent once every call before it is answered, and alone; an answer kicks again.
      if (keyed && this.inFlight > 0) return;
      if (this.timer) {
        clearTimeout(this.timer);
        this.timer = undefined;
      }
      const batch = this.queue.splice(0, n);
      this.queuedBytes -= batch.reduce((sum, p) => sum + p.bytes, 0);
      this.inFlight++;
      this.alone = keyed;
      void this.sendBatch(batch).finally(() => {
        this.inFlight--;
        if (keyed) this.alone = false;
        this.kick();
      });
    }
  }

  /** How many messages the next batch takes: the ready prefix of the queue, within the limits. */
  private batchLength(): number {
    let n = 0;
    let bytes = 0;
    while (n < this.settings.maxMessages && n < this.queue.length) {
      const p = this.queue[n];
      if (!p.ready || p.failed) break;
      if (n > 0 && bytes + p.bytes > this.settings.maxBytes) break;
      bytes += p.bytes;
      n++;
    }
    return n;
  }

  private async sendBatch(batch: Pending[]): Promise<void> {
    if (batch.length === 0) return;
    try {
      const ids = await withRetries(() => {
        this.rpcs++;
        return this.client.publish(
          this.topic,
          batch.map((p) => p.msg),
        );
      }, this.settings.retryDeadlineMs);
      if (ids.length !== batch.length) {
        throw new PgbusError(status.INTERNAL, "the server answered a different number of ids");
      }
      batch.forEach((p, i) => p.resolve(ids[i]));
    } catch (err) {
      const e = toPgbusError(err);
      for (const p of batch) p.reject(e);
    }
  }

  private wakeIdle(): void {
    const waiting = this.idle;
    this.idle = [];
    for (const w of waiting) w();
  }
}
