"""The synchronous client: a connection, every call of the API, and large
payloads checked end to end (the calls themselves are in pgbus._api)."""

from __future__ import annotations

import time
from typing import BinaryIO, Callable, Optional, TypeVar

import grpc

from pgbus._api import (DEFAULT_INLINE_LIMIT, Api, PayloadCheck, backoff_delays,
                        connection_settings, duration, open_channel, upload_requests)
from pgbus.errors import PgbusError, from_rpc_error
from pgbus.v1 import admin_pb2_grpc, bus_pb2, bus_pb2_grpc, types_pb2

__all__ = ["Client", "DEFAULT_INLINE_LIMIT", "duration", "with_retries"]

T = TypeVar("T")


class Client(Api):
    """A connection to pgbusd.

    `target` defaults to $PGBUS_SERVER (else localhost:50051) and `api_key`
    to $PGBUS_API_KEY, sent as `authorization: Bearer <key>`. TLS: pass
    `root_certificates` (PEM bytes of the CA), and for mutual TLS
    `certificate_chain` and `private_key`. Every unary call has a deadline
    (`timeout` seconds, per call overridable).
    """

    def __init__(
        self,
        target: Optional[str] = None,
        api_key: Optional[str] = None,
        *,
        root_certificates: Optional[bytes] = None,
        certificate_chain: Optional[bytes] = None,
        private_key: Optional[bytes] = None,
        timeout: float = 30.0,
        options: Optional[list] = None,
    ):
        self.target, self._metadata = connection_settings(target, api_key)
        self.timeout = timeout
        self.channel = open_channel(grpc, self.target, root_certificates, certificate_chain,
                                    private_key, options)
        self.bus = bus_pb2_grpc.BusServiceStub(self.channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self.channel)

    # -- plumbing ---------------------------------------------------------

    def call(self, method: Callable, request, timeout: Optional[float] = None,
             wait_for_ready: bool = False):
        """Runs a unary stub method with the key and a deadline; PgbusError on failure.

        With `wait_for_ready` (publish, ack and lease calls), a call made while
        a replica restarts waits up to its deadline for the channel to connect
        instead of failing at once. It also keeps the channel polled: grpcio
        drives a connection attempt only from threads waiting on a call, and
        with fail-fast calls alone a reconnect after a restart could sit
        unnoticed (every call failing UNAVAILABLE) for minutes. Admin calls
        fail fast, with the connection's error (a TLS handshake, say)."""
        try:
            return method(request, metadata=self._metadata, timeout=timeout or self.timeout,
                          wait_for_ready=wait_for_ready)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    def _unary(self, method, request, extract, *, timeout=None, wait_for_ready=False):
        return extract(self.call(method, request, timeout, wait_for_ready))

    def _pages(self, method, request, items):
        token = ""
        while True:
            resp = self.call(method, request(token))
            yield from getattr(resp, items)
            token = resp.next_page_token
            if not token:
                return

    @property
    def metadata(self):
        return self._metadata

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def upload(self, topic: str, source: bytes | BinaryIO) -> bus_pb2.UploadPayloadResponse:
        """Streams bytes or a binary file object to UploadPayload in 1 MiB
        requests, hashing as it goes (memory stays at one chunk); the server
        checks the SHA-256 sent with the last request. Returns the handle."""
        try:
            return self.bus.UploadPayload(upload_requests(topic, source), metadata=self._metadata, wait_for_ready=True)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    def retrieve(self, message: types_pb2.Message | str, out: Optional[BinaryIO] = None) -> bytes:
        """A message's payload, whole, in ranged Retrieve calls, checked
        against its SHA-256 (DataLossError on a mismatch, before anything is
        returned; with `out`, bytes are written as they come and the check
        happens at the end). Returns the bytes (b"" when written to `out`)."""
        check = PayloadCheck(message, out)
        while not check.add(self.call(self.bus.Retrieve, check.request())):
            pass
        return check.result()


def with_retries(fn: Callable[[], T], *, deadline: float = 60.0) -> T:
    """Calls fn until it succeeds, fails with a non-retryable error, or
    `deadline` seconds have passed (then the last error is raised), with
    the pauses of pgbus._api.backoff_delays between tries."""
    delays = backoff_delays(deadline)
    while True:
        try:
            return fn()
        except PgbusError as err:
            delay = next(delays, None) if err.retryable else None
            if delay is None:
                raise
        time.sleep(delay)
