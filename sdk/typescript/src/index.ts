// pgbus for TypeScript: the generated stubs (./gen, ts-proto over
// @grpc/grpc-js) and a thin hand-written layer over them.
export {
  Client,
  DEFAULT_INLINE_LIMIT,
  durationMs,
  withRetries,
  type CallOptions,
  type ClientOptions,
  type TlsOptions,
} from "./client";
export { Publisher, type OutgoingMessage, type PublishSettings } from "./publisher";
export { ReceivedMessage, Subscriber, type Handler, type ReceiveSettings } from "./subscriber";
export {
  Code,
  DataLossError,
  isRetryable,
  LeaseExpiredError,
  PgbusError,
  toPgbusError,
} from "./errors";
// The generated messages and stubs most code needs by name; all of them
// under the namespaces `types`, `bus` and `admin`.
export { Message, PublishMessage, Subscription, Topic } from "./gen/pgbus/v1/types";
export { AckStatus, BusServiceClient } from "./gen/pgbus/v1/bus";
export { AdminServiceClient, GetStatsResponse } from "./gen/pgbus/v1/admin";
export { Duration } from "./gen/google/protobuf/duration";
export * as types from "./gen/pgbus/v1/types";
export * as bus from "./gen/pgbus/v1/bus";
export * as admin from "./gen/pgbus/v1/admin";
