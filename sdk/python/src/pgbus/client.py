"""Connection, admin calls and large payloads."""

from __future__ import annotations

import datetime
import hashlib
import os
import random
import time
from typing import BinaryIO, Callable, Iterator, Optional, TypeVar

import grpc
from google.protobuf import duration_pb2

from pgbus.errors import DataLossError, PgbusError, from_rpc_error
from pgbus.v1 import admin_pb2, admin_pb2_grpc, bus_pb2, bus_pb2_grpc, types_pb2

CHUNK_BYTES = 1 << 20  # UploadPayload request size
RETRIEVE_BYTES = 2 << 20  # what one Retrieve returns at most
DEFAULT_INLINE_LIMIT = 256 * 1024

T = TypeVar("T")


def duration(value: Optional[float | datetime.timedelta]) -> Optional[duration_pb2.Duration]:
    """Seconds (or a timedelta) as a protobuf Duration; None stays unset."""
    if value is None:
        return None
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(round(value * 1e9)))
    return d


class Client:
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
        self.target = target or os.environ.get("PGBUS_SERVER", "localhost:50051")
        key = api_key if api_key is not None else os.environ.get("PGBUS_API_KEY", "")
        self._metadata = (("authorization", f"Bearer {key}"),) if key else ()
        self.timeout = timeout
        channel_options = [
            ("grpc.max_receive_message_length", 8 << 20),
            # A replica that restarts (a rolling update) is back in seconds:
            # reconnect within 5 s, not gRPC's default of up to 120 s.
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 5000),
        ] + (options or [])
        if root_certificates is not None:
            creds = grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)
            self.channel = grpc.secure_channel(self.target, creds, channel_options)
        else:
            self.channel = grpc.insecure_channel(self.target, channel_options)
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

    @property
    def metadata(self):
        return self._metadata

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- admin ------------------------------------------------------------

    def create_topic(
        self,
        name: str,
        *,
        retention: Optional[float] = None,
        max_message_bytes: int = 0,
        message_ttl: Optional[float] = None,
        dedup_window: Optional[float] = None,
    ) -> types_pb2.Topic:
        topic = types_pb2.Topic(
            name=name,
            max_message_bytes=max_message_bytes,
            retention=duration(retention),
            message_ttl=duration(message_ttl),
            dedup_window=duration(dedup_window),
        )
        return self.call(self.admin.CreateTopic, admin_pb2.CreateTopicRequest(topic=topic)).topic

    def get_topic(self, name: str) -> types_pb2.Topic:
        return self.call(self.admin.GetTopic, admin_pb2.GetTopicRequest(name=name)).topic

    def list_topics(self) -> Iterator[types_pb2.Topic]:
        token = ""
        while True:
            resp = self.call(self.admin.ListTopics, admin_pb2.ListTopicsRequest(page_token=token))
            yield from resp.topics
            token = resp.next_page_token
            if not token:
                return

    def delete_topic(self, name: str) -> None:
        self.call(self.admin.DeleteTopic, admin_pb2.DeleteTopicRequest(name=name))

    def create_subscription(
        self,
        name: str,
        topic: str,
        *,
        filter: str = "",
        ack_deadline: Optional[float] = None,
        max_delivery_attempts: int = 0,
        dead_letter_topic: str = "",
        min_backoff: Optional[float] = None,
        max_backoff: Optional[float] = None,
    ) -> types_pb2.Subscription:
        sub = types_pb2.Subscription(
            name=name,
            topic=topic,
            filter=filter,
            ack_deadline=duration(ack_deadline),
            max_delivery_attempts=max_delivery_attempts,
            dead_letter_topic=dead_letter_topic,
            min_backoff=duration(min_backoff),
            max_backoff=duration(max_backoff),
        )
        req = admin_pb2.CreateSubscriptionRequest(subscription=sub)
        return self.call(self.admin.CreateSubscription, req).subscription

    def get_subscription(self, name: str) -> types_pb2.Subscription:
        req = admin_pb2.GetSubscriptionRequest(name=name)
        return self.call(self.admin.GetSubscription, req).subscription

    def delete_subscription(self, name: str) -> None:
        self.call(self.admin.DeleteSubscription, admin_pb2.DeleteSubscriptionRequest(name=name))

    def get_stats(self, subscription: str) -> admin_pb2.GetStatsResponse:
        req = admin_pb2.GetStatsRequest(subscription=subscription)
        return self.call(self.admin.GetStats, req)

    # -- publish, ack, retrieve -------------------------------------------

    def publish(self, topic: str, messages: list[types_pb2.PublishMessage],
                timeout: Optional[float] = None) -> list[str]:
        """One Publish call (no batching, no retry: see Publisher)."""
        req = bus_pb2.PublishRequest(topic=topic, messages=messages)
        return list(self.call(self.bus.Publish, req, timeout, wait_for_ready=True).message_ids)

    def ack(self, subscription: str, ack_ids: list[str]) -> list[int]:
        """Per ack id: bus_pb2.ACK_STATUS_OK, or ACK_STATUS_EXPIRED (it may come again)."""
        req = bus_pb2.AckRequest(subscription=subscription, ack_ids=ack_ids)
        return [r.status for r in self.call(self.bus.Ack, req, wait_for_ready=True).results]

    def modify_ack_deadline(self, subscription: str, ack_ids: list[str], seconds: float,
                            reason: str = "") -> list[int]:
        """A new deadline from now; 0 is a nack (with an optional reason)."""
        req = bus_pb2.ModifyAckDeadlineRequest(
            subscription=subscription, ack_ids=ack_ids, ack_deadline=duration(seconds),
            reason=reason)
        return [r.status for r in self.call(self.bus.ModifyAckDeadline, req,
                                               wait_for_ready=True).results]

    def upload(self, topic: str, source: bytes | BinaryIO) -> bus_pb2.UploadPayloadResponse:
        """Streams bytes or a binary file object to UploadPayload in 1 MiB
        requests, hashing as it goes (memory stays at one chunk); the server
        checks the SHA-256 sent with the last request. Returns the handle."""
        digest = hashlib.sha256()

        def chunks():
            first = True
            if isinstance(source, (bytes, bytearray, memoryview)):
                view = memoryview(source)
                parts = (bytes(view[i:i + CHUNK_BYTES]) for i in range(0, len(view), CHUNK_BYTES))
            else:
                parts = iter(lambda: source.read(CHUNK_BYTES), b"")
            pending = None
            for part in parts:
                if pending is not None:
                    yield bus_pb2.UploadPayloadRequest(topic=topic if first else "", data=pending)
                    first = False
                digest.update(part)
                pending = part
            yield bus_pb2.UploadPayloadRequest(topic=topic if first else "", data=pending or b"",
                                               sha256=digest.digest())

        try:
            return self.bus.UploadPayload(chunks(), metadata=self._metadata, wait_for_ready=True)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    def retrieve(self, message: types_pb2.Message | str, out: Optional[BinaryIO] = None) -> bytes:
        """A message's payload, whole, in ranged Retrieve calls, checked
        against its SHA-256 (DataLossError on a mismatch, before anything is
        returned; with `out`, bytes are written as they come and the check
        happens at the end). Returns the bytes (b"" when written to `out`)."""
        message_id = message if isinstance(message, str) else message.id
        digest = hashlib.sha256()
        parts: list[bytes] = []
        offset = 0
        expected = None
        size = None
        while True:
            req = bus_pb2.RetrieveRequest(message_id=message_id, offset=offset,
                                          length=RETRIEVE_BYTES)
            resp = self.call(self.bus.Retrieve, req)
            if expected is None:
                expected = resp.message.sha256
                size = resp.message.size
            digest.update(resp.data)
            if out is not None:
                out.write(resp.data)
            else:
                parts.append(resp.data)
            offset += len(resp.data)
            if offset >= size or not resp.data:
                break
        if offset != size or digest.digest() != expected:
            raise DataLossError(
                f"message {message_id}: {offset} bytes received do not match its SHA-256")
        return b"" if out is not None else b"".join(parts)


def with_retries(fn: Callable[[], T], *, deadline: float = 60.0, initial: float = 0.1,
                 maximum: float = 5.0, sleep: Callable[[float], None] = time.sleep) -> T:
    """Calls fn until it succeeds, fails with a non-retryable error, or
    `deadline` seconds have passed (then the last error is raised), backing
    off exponentially with full jitter between tries. A budget of time, not
    of attempts: while a replica restarts, the channel fails fast for a few
    seconds (gRPC's own reconnect backoff), and a count of tries would be
    spent before it is back."""
    give_up = time.monotonic() + deadline
    delay = initial
    while True:
        try:
            return fn()
        except PgbusError as err:
            if not err.retryable or time.monotonic() >= give_up:
                raise
        sleep(min(random.uniform(0, delay), max(give_up - time.monotonic(), 0)))
        delay = min(delay * 2, maximum)
