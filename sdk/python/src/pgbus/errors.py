"""One error type for everything the server or the SDK refuses."""

from __future__ import annotations

import grpc


class PgbusError(Exception):
    """A failed call: the gRPC status code and the server's message."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message

    @property
    def retryable(self) -> bool:
        """UNAVAILABLE and DEADLINE_EXCEEDED: the same call may succeed later."""
        return self.code in RETRYABLE


class DataLossError(PgbusError):
    """Bytes that do not match their SHA-256: never returned as data."""

    def __init__(self, message: str):
        super().__init__(grpc.StatusCode.DATA_LOSS, message)


RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def from_rpc_error(err: grpc.RpcError) -> PgbusError:
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    message = err.details() if hasattr(err, "details") else str(err)
    if code == grpc.StatusCode.DATA_LOSS:
        return DataLossError(message or "")
    return PgbusError(code, message or "")
