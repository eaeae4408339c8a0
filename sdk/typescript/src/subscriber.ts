// The subscriber: a flow-controlled Subscribe stream, handlers with
// ack()/nack(), leases kept alive while handlers run, reconnects when a
// replica stops, and a stop that drains what is running.
import { randomInt } from "node:crypto";
import type * as grpc from "@grpc/grpc-js";

import { AckStatus, type SubscribeResponse } from "./gen/pgbus/v1/bus";
import type { Message } from "./gen/pgbus/v1/types";
import { type Client, durationMs } from "./client";
import { isPermanent, LeaseExpiredError, toPgbusError } from "./errors";

export interface ReceiveSettings {
  /**
   * At most this many messages / payload bytes are leased and unsettled at
   * once (the server's flow control); defaults 1000 and 100 MiB.
   */
  maxOutstandingMessages?: number;
  maxOutstandingBytes?: number;
  /**
   * The lease of each delivery; default 30 s. While a message is unsettled
   * its lease is extended every ackDeadlineMs/3, up to maxExtensionMs in
   * all (default 60 min).
   */
  ackDeadlineMs?: number;
  maxExtensionMs?: number;
  /** Handlers running at once (receive()); default 8. */
  concurrency?: number;
}

/** One delivery. Settle it with ack() or nack(); until then its lease is kept alive. */
export class ReceivedMessage {
  private settled = false;

  constructor(
    private readonly subscriber: Subscriber,
    readonly ackId: string,
    readonly message: Message,
    readonly deliveryAttempt: number,
  ) {}

  get id(): string {
    return this.message.id;
  }
  get attributes(): Record<string, string> {
    return this.message.attributes;
  }

  /**
   * The payload: carried inline, or (uploaded payloads) retrieved in chunks
   * and checked against the SHA-256 (DataLossError on a mismatch).
   */
  async data(): Promise<Buffer> {
    if (!this.message.payloadByReference) return this.message.payload;
    return this.subscriber.client.retrieveBytes(this.message.id);
  }

  /**
   * Acks the message. Rejects with LeaseExpiredError when the lease had run
   * out (it may come again). Only the first ack() or nack() counts. A
   * Subscriber's acks go in one Ack call at a time, and the next call
   * carries every ack made meanwhile (up to 1000): a handler that does not
   * await the promise (keep it, or `.catch` it) lets the subscriber settle
   * thousands of messages a second in few calls, where one that awaits it
   * holds its place among the `concurrency` handlers for a round trip.
   */
  async ack(): Promise<void> {
    this.settleOnce();
    return this.subscriber.queueAck(this.ackId);
  }

  /** Gives the message back for redelivery after the subscription's backoff. */
  async nack(reason = ""): Promise<void> {
    this.settleOnce();
    let statuses: AckStatus[];
    try {
      statuses = await this.subscriber.client.modifyAckDeadline(
        this.subscriber.subscription, [this.ackId], 0, reason);
    } catch (err) {
      throw toPgbusError(err);
    }
    if (statuses.length !== 1 || statuses[0] !== AckStatus.ACK_STATUS_OK) {
      throw new LeaseExpiredError(this.ackId);
    }
  }

  /** Only the first ack() or nack() counts: a second throws LeaseExpiredError. */
  private settleOnce(): void {
    if (this.settled) throw new LeaseExpiredError(this.ackId);
    this.settled = true;
    this.subscriber.forget(this.ackId);
  }
}

/** The most acks one Ack call carries (the server takes 10000). */
const MAX_ACKS_PER_CALL = 1000;

interface PendingAck {
  ackId: string;
  resolve: () => void;
  reject: (err: Error) => void;
}

export type Handler = (message: ReceivedMessage, signal: AbortSignal) => unknown;

/** Receives from one subscription. */
export class Subscriber {
  private readonly settings: Required<ReceiveSettings>;
  /** ack id -> when received, for lease extension. */
  private readonly leased = new Map<string, number>();
  private reconnectCount = 0;
  /** Acks waiting for the next Ack call; one call is out at a time. */
  private acks: PendingAck[] = [];
  private acking = false;
  private ackCallCount = 0;

  constructor(
    readonly client: Client,
    readonly subscription: string,
    settings: ReceiveSettings = {},
  ) {
    this.settings = {
      maxOutstandingMessages: settings.maxOutstandingMessages || 1000,
      maxOutstandingBytes: settings.maxOutstandingBytes || 100 << 20,
      ackDeadlineMs: settings.ackDeadlineMs || 30_000,
      maxExtensionMs: settings.maxExtensionMs || 3_600_000,
      concurrency: settings.concurrency || 8,
    };
  }

  /** How many times the stream was opened again after it ended. */
  get reconnects(): number {
    return this.reconnectCount;
  }

  /** Ack calls sent so far (each carries the acks made while the one before it was out). */
  get ackCalls(): number {
    return this.ackCallCount;
  }

  /** @internal */
  forget(ackId: string): void {
    this.leased.delete(ackId);
  }

  /** @internal Resolves when the ack is in; see ReceivedMessage.ack(). */
  queueAck(ackId: string): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.acks.push({ ackId, resolve, reject });
      if (!this.acking) {
        this.acking = true;
        // After this turn of the event loop: the acks its callbacks make go
        // in the same call.
        setImmediate(() => void this.sendAcks());
      }
    });
  }

  private async sendAcks(): Promise<void> {
    try {
      while (this.acks.length > 0) {
        const batch = this.acks.splice(0, MAX_ACKS_PER_CALL);
        this.ackCallCount++;
        let statuses: AckStatus[];
        try {
          statuses = await this.client.ack(this.subscription, batch.map((a) => a.ackId));
        } catch (err) {
          const e = toPgbusError(err);
          for (const a of batch) a.reject(e);
          continue;
        }
        // An answer without one status per id settles none of them.
        const whole = statuses.length === batch.length;
        batch.forEach((a, i) => {
          if (whole && statuses[i] === AckStatus.ACK_STATUS_OK) a.resolve();
          else a.reject(new LeaseExpiredError(a.ackId));
        });
      }
    } finally {
      this.acking = false;
    }
  }

  /**
   * Calls `handler` for each message, up to `concurrency` at once, until
   * `signal` aborts (then resolves once running handlers have returned, and
   * gives back at once what was received but not handed out) or the server
   * refuses the subscription for good (NOT_FOUND, PERMISSION_DENIED, ...:
   * rejects with that error). A stream that ends otherwise (a replica
   * stopping: UNAVAILABLE) is opened again with backoff. A handler that
   * returns without settling its message leaves it leased (extended up to
   * maxExtensionMs) for a later ack() or nack(); one that throws nacks it.
   */
  async receive(handler: Handler, opts: { signal?: AbortSignal } = {}): Promise<void> {
    const stop = new AbortController();
    const onAbort = () => stop.abort();
    if (opts.signal?.aborted) return;
    opts.signal?.addEventListener("abort", onAbort, { once: true });

    const waiting: ReceivedMessage[] = [];
    const running = new Set<Promise<void>>();
    const dispatch = () => {
      while (!stop.signal.aborted && running.size < this.settings.concurrency && waiting.length > 0) {
        const m = waiting.shift()!;
        const run = (async () => {
          try {
            await handler(m, stop.signal);
          } catch {
            await m.nack("handler failed").catch(() => {});
          }
        })();
        running.add(run);
        void run.finally(() => {
          running.delete(run);
          dispatch();
        });
      }
    };
    const extender = setInterval(
      () => this.extendLeases(),
      // A third of the deadline: two extensions may be late before a lease lapses.
      Math.max(this.settings.ackDeadlineMs / 3, 200),
    );
    try {
      await this.stream(stop.signal, (m) => {
        waiting.push(m);
        dispatch();
      });
    } finally {
      stop.abort();
      opts.signal?.removeEventListener("abort", onAbort);
      // Received but never handed to a handler: give it back now rather
      // than when its lease runs out.
      await Promise.all(waiting.splice(0).map((m) => m.nack("subscriber stopped").catch(() => {})));
      while (running.size > 0) await Promise.all([...running]);
      clearInterval(extender);
    }
  }

  /**
   * The messages as an async iterator; settle each with ack() or nack().
   * Leaving the loop (or `signal` aborting) stops the stream; messages
   * received but not yet yielded are given back.
   */
  async *messages(opts: { signal?: AbortSignal } = {}): AsyncGenerator<ReceivedMessage> {
    const stop = new AbortController();
    const onAbort = () => stop.abort();
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    const ready: ReceivedMessage[] = [];
    let wake: (() => void) | undefined;
    let failure: unknown;
    let ended = false;
    const session = this.receive(
      (m) => {
        ready.push(m);
        wake?.();
      },
      { signal: stop.signal },
    ).then(
      () => {
        ended = true;
        wake?.();
      },
      (err) => {
        failure = err;
        ended = true;
        wake?.();
      },
    );
    try {
      for (;;) {
        while (ready.length > 0) yield ready.shift()!;
        if (ended) break;
        await new Promise<void>((r) => (wake = r));
        wake = undefined;
      }
      if (failure) throw failure;
    } finally {
      stop.abort();
      opts.signal?.removeEventListener("abort", onAbort);
      await session;
      await Promise.all(ready.splice(0).map((m) => m.nack("subscriber stopped").catch(() => {})));
    }
  }

  /** Runs Subscribe streams until `signal` aborts or a permanent error. */
  private async stream(signal: AbortSignal, deliver: (m: ReceivedMessage) => void): Promise<void> {
    const request = {
      subscription: this.subscription,
      maxOutstandingMessages: this.settings.maxOutstandingMessages,
      maxOutstandingBytes: this.settings.maxOutstandingBytes,
      ackDeadline: durationMs(this.settings.ackDeadlineMs),
    };
    let backoff = 100;
    while (!signal.aborted) {
      const err = await new Promise<unknown>((resolve) => {
        const call: grpc.ClientReadableStream<SubscribeResponse> = this.client.bus.subscribe(
          request,
          this.client.metadata(),
        );
        const onAbort = () => call.cancel();
        signal.addEventListener("abort", onAbort, { once: true });
        let finished = false;
        const finish = (e: unknown) => {
          if (finished) return;
          finished = true;
          signal.removeEventListener("abort", onAbort);
          resolve(e);
        };
        call.on("data", (resp: SubscribeResponse) => {
          backoff = 100;
          for (const r of resp.messages) {
            const m = new ReceivedMessage(this, r.ackId, r.message!, r.deliveryAttempt);
            this.leased.set(m.ackId, Date.now());
            deliver(m);
          }
        });
        call.on("error", (e) => finish(e));
        call.on("end", () => finish(undefined));
      });
      if (signal.aborted) return;
      if (isPermanent(err)) throw toPgbusError(err);
      // The stream ended (a replica stopping): open it again.
      this.reconnectCount++;
      await new Promise((r) => setTimeout(r, backoff / 2 + randomInt(0, backoff / 2 + 1)));
      backoff = Math.min(backoff * 2, 5000);
    }
  }

  /** Keeps the leases of unsettled messages alive while younger than maxExtensionMs. */
  private extendLeases(): void {
    const now = Date.now();
    const ids: string[] = [];
    for (const [id, since] of this.leased) {
      if (now - since < this.settings.maxExtensionMs) ids.push(id);
      else this.leased.delete(id); // given up: its lease runs out
    }
    for (let i = 0; i < ids.length; i += 10_000) {
      // A failure is retried next round; a lost lease shows at ack().
      this.client
        .modifyAckDeadline(this.subscription, ids.slice(i, i + 10_000), this.settings.ackDeadlineMs)
        .catch(() => {});
    }
  }
}
