// One error type for every failed call: the gRPC status code and the
// server's message (which says what to fix).
import { status, type ServiceError } from "@grpc/grpc-js";

export { status as Code };

export class PgbusError extends Error {
  /** The gRPC status code (`Code.NOT_FOUND`, ...). */
  readonly code: status;
  /** The server's message alone. */
  readonly details: string;

  constructor(code: status, details: string) {
    super(`pgbus: ${status[code] ?? code}: ${details}`);
    this.name = "PgbusError";
    this.code = code;
    this.details = details;
  }

  /** Whether the same call may succeed later (see isRetryable). */
  get retryable(): boolean {
    return isRetryable(this);
  }
}

/**
 * Bytes that do not match their SHA-256; they are never returned as data.
 * The code is DATA_LOSS, as for the server's own checks.
 */
export class DataLossError extends PgbusError {
  /** The message whose bytes failed their check, when the client knows it. */
  readonly messageId: string;
  constructor(details: string, messageId = "") {
    super(status.DATA_LOSS, messageId ? `message ${messageId}: ${details}` : details);
    this.name = "DataLossError";
    this.messageId = messageId;
  }
}

/**
 * What ack() and nack() reject with when the message's lease had run out
 * (or was taken over): it may be delivered again.
 */
export class LeaseExpiredError extends PgbusError {
  readonly ackId: string;
  constructor(ackId: string) {
    super(status.FAILED_PRECONDITION, "the lease had expired; the message may be delivered again");
    this.name = "LeaseExpiredError";
    this.ackId = ackId;
  }
}

/** Converts what grpc-js rejects with (or anything else) to a PgbusError. */
export function toPgbusError(err: unknown): PgbusError {
  if (err instanceof PgbusError) return err;
  const e = err as Partial<ServiceError>;
  if (e && typeof e.code === "number") {
    if (e.code === status.DATA_LOSS) return new DataLossError(e.details ?? String(e.message));
    return new PgbusError(e.code, e.details ?? String(e.message));
  }
  return new PgbusError(status.UNKNOWN, err instanceof Error ? err.message : String(err));
}

/**
 * UNAVAILABLE (a replica restarting, a lost connection) and
 * DEADLINE_EXCEEDED may succeed later; every other status says what to fix.
 */
export function isRetryable(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  return code === status.UNAVAILABLE || code === status.DEADLINE_EXCEEDED;
}

/** Codes a new Subscribe stream would meet again. */
export function isPermanent(err: unknown): boolean {
  switch ((err as { code?: unknown })?.code) {
    case status.INVALID_ARGUMENT:
    case status.NOT_FOUND:
    case status.PERMISSION_DENIED:
    case status.UNAUTHENTICATED:
    case status.FAILED_PRECONDITION:
    case status.UNIMPLEMENTED:
      return true;
    default:
      return false;
  }
}
