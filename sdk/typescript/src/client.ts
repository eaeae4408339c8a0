// The client: a channel to pgbusd, the API key on every call, a deadline on
// every unary call, Promises for the generated callbacks, and large
// payloads uploaded and retrieved in chunks with their SHA-256 checked.
import { createHash, randomInt } from "node:crypto";
import { once } from "node:events";
import * as grpc from "@grpc/grpc-js";

import { Duration } from "./gen/google/protobuf/duration";
import {
  AdminServiceClient,
  GetStatsResponse,
  ListDeadLettersRequest,
  ListDeadLettersResponse,
  ListMessagesRequest,
  ListMessagesResponse,
  ListSubscriptionsRequest,
  ListSubscriptionsResponse,
  ListTopicsRequest,
  ListTopicsResponse,
  RedriveDeadLettersRequest,
} from "./gen/pgbus/v1/admin";
import {
  AckStatus,
  BusServiceClient,
  UploadPayloadRequest,
  type UploadPayloadResponse,
} from "./gen/pgbus/v1/bus";
import { PublishMessage, Subscription, Topic } from "./gen/pgbus/v1/types";
import { DataLossError, isRetryable, PgbusError, toPgbusError } from "./errors";
import { Publisher, type PublishSettings } from "./publisher";
import { Subscriber, type ReceiveSettings } from "./subscriber";

/** The server's default inline payload limit; larger payloads are uploaded. */
export const DEFAULT_INLINE_LIMIT = 256 * 1024;
const CHUNK_BYTES = 1 << 20; // one UploadPayload request
const RETRIEVE_BYTES = 2 << 20; // what one Retrieve asks for

export interface TlsOptions {
  /** PEM of the CA that signed the server's certificate (a private CA). */
  rootCerts?: Buffer;
  /** PEM key and certificate chain of this client, for mutual TLS. */
  privateKey?: Buffer;
  certChain?: Buffer;
}

export interface ClientOptions {
  /** host:port; default $PGBUS_SERVER, else localhost:50051. */
  target?: string;
  /** Sent as `authorization: Bearer <key>`; default $PGBUS_API_KEY. */
  apiKey?: string;
  /** TLS (true: the system's CAs); plaintext when unset. */
  tls?: TlsOptions | boolean;
  /** Deadline of each unary call that has none of its own; default 30 s. */
  timeoutMs?: number;
  /** More grpc-js channel options (they win over the client's own). */
  channelOptions?: grpc.ChannelOptions;
}

/** Per-call options of every unary call. */
export interface CallOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** A proto Duration of `ms` milliseconds. */
export function durationMs(ms: number): Duration {
  return { seconds: Math.floor(ms / 1000), nanos: Math.round((ms % 1000) * 1e6) };
}

type UnaryMethod<Req, Res> = (
  request: Req,
  metadata: grpc.Metadata,
  options: Partial<grpc.CallOptions>,
  callback: (error: grpc.ServiceError | null, response: Res) => void,
) => grpc.ClientUnaryCall;

export class Client {
  /** The generated stubs, for anything not wrapped here (pass metadata()). */
  readonly bus: BusServiceClient;
  readonly admin: AdminServiceClient;
  readonly target: string;
  private readonly apiKey: string;
  private readonly timeoutMs: number;

  constructor(options: ClientOptions = {}) {
    this.target = options.target || process.env.PGBUS_SERVER || "localhost:50051";
    this.apiKey = options.apiKey ?? process.env.PGBUS_API_KEY ?? "";
    this.timeoutMs = options.timeoutMs ?? 30_000;
    let creds: grpc.ChannelCredentials;
    if (options.tls) {
      const t: TlsOptions = options.tls === true ? {} : options.tls;
      creds = grpc.credentials.createSsl(t.rootCerts ?? null, t.privateKey ?? null, t.certChain ?? null);
    } else {
      creds = grpc.credentials.createInsecure();
    }
    const channel: grpc.ChannelOptions = {
      "grpc.max_receive_message_length": 16 << 20,
      // A restarted replica is back in seconds: gRPC's default backoff
      // reaches 120 s.
      "grpc.initial_reconnect_backoff_ms": 200,
      "grpc.max_reconnect_backoff_ms": 5000,
      ...options.channelOptions,
    };
    this.bus = new BusServiceClient(this.target, creds, channel);
    // The admin stub shares the bus stub's channel.
    this.admin = new AdminServiceClient(this.target, creds, {
      ...channel,
      channelOverride: this.bus.getChannel(),
    });
  }

  /** Closes the channel. */
  close(): void {
    this.bus.close();
  }

  /** The metadata of every call: the API key, when there is one. */
  metadata(): grpc.Metadata {
    const md = new grpc.Metadata();
    if (this.apiKey) md.set("authorization", `Bearer ${this.apiKey}`);
    return md;
  }

  /** Calls a unary method of a generated stub with the key and a deadline. */
  unary<Req, Res>(
    stub: grpc.Client,
    method: UnaryMethod<Req, Res>,
    request: Req,
    opts: CallOptions = {},
  ): Promise<Res> {
    return new Promise<Res>((resolve, reject) => {
      if (opts.signal?.aborted) {
        reject(new PgbusError(grpc.status.CANCELLED, "the call was aborted before it started"));
        return;
      }
      const deadline = new Date(Date.now() + (opts.timeoutMs ?? this.timeoutMs));
      const onAbort = () => call.cancel();
      const call = method.call(stub, request, this.metadata(), { deadline }, (err, res) => {
        opts.signal?.removeEventListener("abort", onAbort);
        if (err) reject(toPgbusError(err));
        else resolve(res);
      });
      opts.signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  // --- Admin ---------------------------------------------------------------

  /** Creates a topic; unset fields take the server's defaults. */
  async createTopic(topic: Partial<Topic> & { name: string }, opts?: CallOptions): Promise<Topic> {
    const r = await this.unary(this.admin, this.admin.createTopic, { topic: Topic.fromPartial(topic) }, opts);
    return r.topic!;
  }
  async getTopic(name: string, opts?: CallOptions): Promise<Topic> {
    return (await this.unary(this.admin, this.admin.getTopic, { name }, opts)).topic!;
  }
  listTopics(request: Partial<ListTopicsRequest> = {}, opts?: CallOptions): Promise<ListTopicsResponse> {
    return this.unary(this.admin, this.admin.listTopics, ListTopicsRequest.fromPartial(request), opts);
  }
  /** Deletes a topic with its messages. */
  async deleteTopic(name: string, opts?: CallOptions): Promise<void> {
    await this.unary(this.admin, this.admin.deleteTopic, { name }, opts);
  }
  /** Creates a subscription; unset fields take the server's defaults. */
  async createSubscription(
    subscription: Partial<Subscription> & { name: string; topic: string },
    opts?: CallOptions,
  ): Promise<Subscription> {
    const r = await this.unary(
      this.admin,
      this.admin.createSubscription,
      { subscription: Subscription.fromPartial(subscription) },
      opts,
    );
    return r.subscription!;
  }
  async getSubscription(name: string, opts?: CallOptions): Promise<Subscription> {
    return (await this.unary(this.admin, this.admin.getSubscription, { name }, opts)).subscription!;
  }
  listSubscriptions(
    request: Partial<ListSubscriptionsRequest> = {},
    opts?: CallOptions,
  ): Promise<ListSubscriptionsResponse> {
    return this.unary(
      this.admin,
      this.admin.listSubscriptions,
      ListSubscriptionsRequest.fromPartial(request),
      opts,
    );
  }
  /** Deletes a subscription with its deliveries. */
  async deleteSubscription(name: string, opts?: CallOptions): Promise<void> {
    await this.unary(this.admin, this.admin.deleteSubscription, { name }, opts);
  }
  /** Replays (or skips) a subscription to the messages published since `time`. */
  async seek(subscription: string, time: Date, opts?: CallOptions): Promise<void> {
    await this.unary(this.admin, this.admin.seek, { subscription, time }, opts);
  }
  /** Backlog, in flight, oldest unacked age and counters of a subscription or topic. */
  getStats(target: { subscription?: string; topic?: string }, opts?: CallOptions): Promise<GetStatsResponse> {
    return this.unary(
      this.admin,
      this.admin.getStats,
      { subscription: target.subscription ?? "", topic: target.topic ?? "" },
      opts,
    );
  }
  /** Messages by correlation id. */
  listMessages(request: Partial<ListMessagesRequest>, opts?: CallOptions): Promise<ListMessagesResponse> {
    return this.unary(this.admin, this.admin.listMessages, ListMessagesRequest.fromPartial(request), opts);
  }
  listDeadLetters(
    request: Partial<ListDeadLettersRequest> & { subscription: string },
    opts?: CallOptions,
  ): Promise<ListDeadLettersResponse> {
    return this.unary(
      this.admin,
      this.admin.listDeadLetters,
      ListDeadLettersRequest.fromPartial(request),
      opts,
    );
  }
  /** Publishes dead letters to their subscription again; the new ids. */
  async redriveDeadLetters(
    request: Partial<RedriveDeadLettersRequest> & { subscription: string },
    opts?: CallOptions,
  ): Promise<string[]> {
    const r = await this.unary(
      this.admin,
      this.admin.redriveDeadLetters,
      RedriveDeadLettersRequest.fromPartial(request),
      opts,
    );
    return r.messageIds;
  }

  // --- Bus -----------------------------------------------------------------

  /** One Publish call: no batching and no retry (see publisher()). The ids, in order. */
  async publish(topic: string, messages: Partial<PublishMessage>[], opts?: CallOptions): Promise<string[]> {
    const r = await this.unary(
      this.bus,
      this.bus.publish,
      { topic, messages: messages.map((m) => PublishMessage.fromPartial(m)) },
      opts,
    );
    return r.messageIds;
  }

  /** Acks deliveries: per ack id OK, or EXPIRED when its lease was lost (it may come again). */
  async ack(subscription: string, ackIds: string[], opts?: CallOptions): Promise<AckStatus[]> {
    const r = await this.unary(this.bus, this.bus.ack, { subscription, ackIds }, opts);
    return r.results.map((x) => x.status);
  }

  /** Sets the deadline of leases to `deadlineMs` from now; 0 is a nack, with an optional reason. */
  async modifyAckDeadline(
    subscription: string,
    ackIds: string[],
    deadlineMs: number,
    reason = "",
    opts?: CallOptions,
  ): Promise<AckStatus[]> {
    const r = await this.unary(
      this.bus,
      this.bus.modifyAckDeadline,
      { subscription, ackIds, ackDeadline: durationMs(deadlineMs), reason },
      opts,
    );
    return r.results.map((x) => x.status);
  }

  /**
   * Streams a payload to UploadPayload in 1 MiB requests, hashing as it
   * goes (an async iterable is never held in memory whole); the server
   * checks the SHA-256 sent with the last request. Publish the returned
   * handle as `payloadHandle`.
   */
  async upload(
    topic: string,
    source: Uint8Array | Iterable<Uint8Array> | AsyncIterable<Uint8Array>,
    opts: { compressed?: boolean; signal?: AbortSignal } = {},
  ): Promise<UploadPayloadResponse> {
    let onAbort = () => {};
    const done = new Promise<UploadPayloadResponse>((resolve, reject) => {
      const call = this.bus.uploadPayload(this.metadata(), {}, (err, res) => {
        opts.signal?.removeEventListener("abort", onAbort);
        if (err) reject(toPgbusError(err));
        else resolve(res);
      });
      onAbort = () => call.cancel();
      opts.signal?.addEventListener("abort", onAbort, { once: true });
      const send = async () => {
        const digest = createHash("sha256");
        let first = true;
        let held: Buffer | undefined; // one chunk behind: the last carries the checksum
        const write = async (data: Buffer, last: boolean) => {
          const req = UploadPayloadRequest.fromPartial({ data });
          if (first) {
            req.topic = topic;
            req.compressed = opts.compressed ?? false;
            first = false;
          }
          if (last) req.sha256 = digest.digest();
          if (!call.write(req)) await once(call, "drain");
        };
        for await (const chunk of rechunk(source, CHUNK_BYTES)) {
          digest.update(chunk);
          if (held) await write(held, false);
          held = chunk;
        }
        await write(held ?? Buffer.alloc(0), true);
        call.end();
      };
      // A failed write means the server ended the call: its callback says why.
      send().catch(() => call.cancel());
    });
    return done;
  }

  /**
   * A message's payload in ranged Retrieve calls, chunk by chunk. After the
   * last chunk the whole is checked against the message's SHA-256: a
   * mismatch throws DataLossError, but the chunks before it were already
   * yielded, so write them somewhere temporary (retrieveBytes returns
   * nothing unchecked).
   */
  async *retrieve(messageId: string, opts: CallOptions = {}): AsyncGenerator<Buffer> {
    const digest = createHash("sha256");
    let offset = 0;
    let size = -1;
    let want: Buffer | undefined;
    while (size < 0 || offset < size) {
      const r = await this.unary(
        this.bus,
        this.bus.retrieve,
        { messageId, offset, length: RETRIEVE_BYTES },
        opts,
      );
      if (size < 0) {
        size = r.message?.size ?? 0;
        want = r.message?.sha256;
      }
      if (r.data.length === 0) break;
      digest.update(r.data);
      offset += r.data.length;
      yield r.data;
    }
    if (offset !== size || !want || !digest.digest().equals(want)) {
      throw new DataLossError("the bytes received do not match the message's SHA-256", messageId);
    }
  }

  /** The whole payload in memory; nothing is returned unless the SHA-256 matches. */
  async retrieveBytes(messageId: string, opts?: CallOptions): Promise<Buffer> {
    const parts: Buffer[] = [];
    for await (const part of this.retrieve(messageId, opts)) parts.push(part);
    return Buffer.concat(parts);
  }

  /** A batching publisher for `topic`; close() it when done. */
  publisher(topic: string, settings: PublishSettings = {}): Publisher {
    return new Publisher(this, topic, settings);
  }

  /** A subscriber of `subscription`; call receive() or messages(). */
  subscriber(subscription: string, settings: ReceiveSettings = {}): Subscriber {
    return new Subscriber(this, subscription, settings);
  }
}

/** Re-cuts a source into chunks of `size` bytes (the last may be shorter). */
async function* rechunk(
  source: Uint8Array | Iterable<Uint8Array> | AsyncIterable<Uint8Array>,
  size: number,
): AsyncGenerator<Buffer> {
  if (source instanceof Uint8Array) {
    const all = Buffer.from(source.buffer, source.byteOffset, source.byteLength);
    for (let at = 0; at < all.length; at += size) yield all.subarray(at, at + size);
    return;
  }
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  for await (const piece of source as AsyncIterable<Uint8Array>) {
    let rest = Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength);
    while (pendingBytes + rest.length >= size) {
      const take = size - pendingBytes;
      pending.push(rest.subarray(0, take));
      yield Buffer.concat(pending, size);
      pending = [];
      pendingBytes = 0;
      rest = rest.subarray(take);
    }
    if (rest.length > 0) {
      pending.push(Buffer.from(rest)); // the source may reuse its buffer
      pendingBytes += rest.length;
    }
  }
  if (pendingBytes > 0) yield Buffer.concat(pending, pendingBytes);
}

/**
 * Calls `fn` until it succeeds, fails with an error that is not retryable,
 * `signal` aborts, or `budgetMs` has passed (then the last error), backing
 * off exponentially with full jitter. A budget of time, not of attempts:
 * while a replica restarts the channel fails fast for a few seconds.
 */
export async function withRetries<T>(
  fn: () => Promise<T>,
  budgetMs: number,
  signal?: AbortSignal,
): Promise<T> {
  const giveUp = Date.now() + budgetMs;
  let delay = 100;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (!isRetryable(err) || signal?.aborted || Date.now() >= giveUp) throw err;
      const sleep = Math.min(randomInt(1, delay + 1), Math.max(giveUp - Date.now(), 0));
      await new Promise((r) => setTimeout(r, sleep));
      delay = Math.min(delay * 2, 5000);
    }
  }
}
