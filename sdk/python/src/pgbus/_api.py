"""The calls of pgbus's API, written once for Client and aio.AsyncClient.

Each method builds its request and names what to take from the answer;
the subclass runs it: `_unary` returns the result (Client) or an awaitable
of it (AsyncClient), `_pages` an iterator (Client) or an async iterator
(AsyncClient) over every item of every page.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import random
import time
from typing import Any, BinaryIO, Callable, Iterator, Optional

import grpc
from google.protobuf import duration_pb2, timestamp_pb2

from pgbus.errors import DataLossError
from pgbus.v1 import admin_pb2, bus_pb2, types_pb2

CHUNK_BYTES = 1 << 20  # UploadPayload request size
RETRIEVE_BYTES = 2 << 20  # what one Retrieve returns at most
DEFAULT_INLINE_LIMIT = 256 * 1024

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 8 << 20),
    # A replica that restarts (a rolling update) is back in seconds:
    # reconnect within 5 s, not gRPC's default of up to 120 s.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5000),
]


def open_channel(grpc_module, target: str, root_certificates: Optional[bytes],
                 certificate_chain: Optional[bytes], private_key: Optional[bytes],
                 options: Optional[list], **kwargs):
    """A channel of `grpc_module` (grpc, or grpc.aio): TLS when
    `root_certificates` is given (mutual with a chain and key), else plaintext."""
    channel_options = CHANNEL_OPTIONS + (options or [])
    if root_certificates is not None:
        creds = grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)
        return grpc_module.secure_channel(target, creds, channel_options, **kwargs)
    return grpc_module.insecure_channel(target, channel_options, **kwargs)


def duration(value: Optional[float | datetime.timedelta]) -> Optional[duration_pb2.Duration]:
    """Seconds (or a timedelta) as a protobuf Duration; None stays unset."""
    if value is None:
        return None
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(round(value * 1e9)))
    return d


def timestamp(value: float | datetime.datetime) -> timestamp_pb2.Timestamp:
    """Seconds since the epoch (or an aware datetime) as a protobuf Timestamp."""
    if isinstance(value, datetime.datetime):
        value = value.timestamp()
    t = timestamp_pb2.Timestamp()
    t.FromNanoseconds(int(round(value * 1e9)))
    return t


def connection_settings(target: Optional[str], api_key: Optional[str]):
    """The target and call metadata: arguments first, then $PGBUS_SERVER
    (else localhost:50051) and $PGBUS_API_KEY (sent as a Bearer token)."""
    target = target or os.environ.get("PGBUS_SERVER", "localhost:50051")
    key = api_key if api_key is not None else os.environ.get("PGBUS_API_KEY", "")
    return target, ((("authorization", f"Bearer {key}"),) if key else ())


def backoff_delays(deadline: float, initial: float = 0.1, maximum: float = 5.0) -> Iterator[float]:
    """The pauses between tries of a call retried for `deadline` seconds:
    exponential with full jitter, the last one cut to the deadline; ends
    when the deadline has passed. A budget of time, not of attempts: while
    a replica restarts, the channel fails fast for a few seconds (gRPC's own
    reconnect backoff), and a count of tries would be spent before it is
    back."""
    give_up = time.monotonic() + deadline
    delay = initial
    while time.monotonic() < give_up:
        yield min(random.uniform(0, delay), max(give_up - time.monotonic(), 0))
        delay = min(delay * 2, maximum)


def upload_requests(topic: str, source: bytes | BinaryIO) -> Iterator[bus_pb2.UploadPayloadRequest]:
    """bytes or a binary file object as UploadPayload requests of 1 MiB,
    hashed as they go (memory stays at one chunk); the last one carries the
    SHA-256, which the server checks."""
    digest = hashlib.sha256()
    if isinstance(source, (bytes, bytearray, memoryview)):
        view = memoryview(source)
        parts = (bytes(view[i:i + CHUNK_BYTES]) for i in range(0, len(view), CHUNK_BYTES))
    else:
        parts = iter(lambda: source.read(CHUNK_BYTES), b"")
    first = True
    pending = None
    for part in parts:
        if pending is not None:
            yield bus_pb2.UploadPayloadRequest(topic=topic if first else "", data=pending)
            first = False
        digest.update(part)
        pending = part
    yield bus_pb2.UploadPayloadRequest(topic=topic if first else "", data=pending or b"",
                                       sha256=digest.digest())


class PayloadCheck:
    """A payload read in ranged Retrieve calls and checked against its
    SHA-256 at the end (DataLossError on a mismatch, before anything is
    returned; with `out`, bytes are written as they come). The caller runs
    request() until add() says the payload is complete, then result()."""

    def __init__(self, message: types_pb2.Message | str, out: Optional[BinaryIO] = None):
        self.message_id = message if isinstance(message, str) else message.id
        self.out = out
        self.digest = hashlib.sha256()
        self.parts: list[bytes] = []
        self.offset = 0
        self.expected: Optional[bytes] = None
        self.size = 0

    def request(self) -> bus_pb2.RetrieveRequest:
        return bus_pb2.RetrieveRequest(message_id=self.message_id, offset=self.offset,
                                       length=RETRIEVE_BYTES)

    def add(self, resp: bus_pb2.RetrieveResponse) -> bool:
        if self.expected is None:
            self.expected = resp.message.sha256
            self.size = resp.message.size
        self.digest.update(resp.data)
        if self.out is not None:
            self.out.write(resp.data)
        else:
            self.parts.append(resp.data)
        self.offset += len(resp.data)
        return self.offset >= self.size or not resp.data

    def result(self) -> bytes:
        """The bytes (b"" when written to `out`), or DataLossError."""
        if self.offset != self.size or self.digest.digest() != self.expected:
            raise DataLossError(f"message {self.message_id}: {self.offset} bytes received do "
                                "not match its SHA-256")
        return b"" if self.out is not None else b"".join(self.parts)


def subscribe_request(subscription: str, max_outstanding_messages: int,
                      max_outstanding_bytes: int, ack_deadline: float) -> bus_pb2.SubscribeRequest:
    """The Subscribe call of a subscriber (sync or asyncio) with its flow control."""
    return bus_pb2.SubscribeRequest(
        subscription=subscription,
        max_outstanding_messages=max_outstanding_messages,
        max_outstanding_bytes=max_outstanding_bytes,
        ack_deadline=duration(ack_deadline))


def statuses(response) -> list[int]:
    return [r.status for r in response.results]


class Api:
    """Every unary and paged call of the API (see the module's docstring)."""

    admin: Any
    bus: Any

    def _unary(self, method: Callable, request, extract: Callable[[Any], Any], *,
               timeout: Optional[float] = None, wait_for_ready: bool = False):
        raise NotImplementedError

    def _pages(self, method: Callable, request: Callable[[str], Any], items: str):
        """Calls `method` with request(page_token) until no next page token;
        yields the `items` of each answer."""
        raise NotImplementedError

    # -- topics and subscriptions -----------------------------------------

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
        return self._unary(self.admin.CreateTopic, admin_pb2.CreateTopicRequest(topic=topic),
                           lambda r: r.topic)

    def get_topic(self, name: str) -> types_pb2.Topic:
        return self._unary(self.admin.GetTopic, admin_pb2.GetTopicRequest(name=name),
                           lambda r: r.topic)

    def list_topics(self, page_size: int = 0):
        """Every topic, read page_size at a time (0: the server's default)."""
        return self._pages(self.admin.ListTopics,
                           lambda token: admin_pb2.ListTopicsRequest(page_size=page_size,
                                                                     page_token=token),
                           "topics")

    def delete_topic(self, name: str) -> None:
        return self._unary(self.admin.DeleteTopic, admin_pb2.DeleteTopicRequest(name=name),
                           lambda r: None)

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
        """`topic` may be a pattern (see the proto); `filter` selects by attributes."""
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
        return self._unary(self.admin.CreateSubscription,
                           admin_pb2.CreateSubscriptionRequest(subscription=sub),
                           lambda r: r.subscription)

    def get_subscription(self, name: str) -> types_pb2.Subscription:
        return self._unary(self.admin.GetSubscription,
                           admin_pb2.GetSubscriptionRequest(name=name), lambda r: r.subscription)

    def list_subscriptions(self, topic: str = "", page_size: int = 0):
        """The subscriptions of `topic` (every one when empty)."""
        return self._pages(self.admin.ListSubscriptions,
                           lambda token: admin_pb2.ListSubscriptionsRequest(
                               topic=topic, page_size=page_size, page_token=token),
                           "subscriptions")

    def delete_subscription(self, name: str) -> None:
        return self._unary(self.admin.DeleteSubscription,
                           admin_pb2.DeleteSubscriptionRequest(name=name), lambda r: None)

    def seek(self, subscription: str, time: float | datetime.datetime) -> None:
        """Replays (or skips) the subscription to the messages published
        since `time` (seconds since the epoch, or a datetime)."""
        req = admin_pb2.SeekRequest(subscription=subscription, time=timestamp(time))
        return self._unary(self.admin.Seek, req, lambda r: None)

    def get_stats(self, subscription: str = "", *, topic: str = "") -> admin_pb2.GetStatsResponse:
        """Backlog, in flight, oldest unacked age and counters of a
        subscription (or a topic)."""
        req = admin_pb2.GetStatsRequest(subscription=subscription, topic=topic)
        return self._unary(self.admin.GetStats, req, lambda r: r)

    def list_messages(self, correlation_id: str, page_size: int = 0):
        """The messages with a correlation id."""
        return self._pages(self.admin.ListMessages,
                           lambda token: admin_pb2.ListMessagesRequest(
                               correlation_id=correlation_id, page_size=page_size,
                               page_token=token),
                           "messages")

    def list_dead_letters(self, subscription: str, page_size: int = 0):
        """The dead letters of a subscription (with pgbus.dead_letter.* attributes)."""
        return self._pages(self.admin.ListDeadLetters,
                           lambda token: admin_pb2.ListDeadLettersRequest(
                               subscription=subscription, page_size=page_size,
                               page_token=token),
                           "messages")

    def redrive_dead_letters(self, subscription: str, message_ids: Optional[list[str]] = None,
                             limit: int = 0) -> list[str]:
        """Publishes dead letters to their original topic again (these ids,
        or the oldest `limit`); the new ids."""
        req = admin_pb2.RedriveDeadLettersRequest(subscription=subscription,
                                                  message_ids=message_ids or [], limit=limit)
        return self._unary(self.admin.RedriveDeadLetters, req, lambda r: list(r.message_ids))

    # -- publish, ack ------------------------------------------------------
    # With wait_for_ready: a call made while a replica restarts waits up to
    # its deadline for the channel to connect instead of failing at once
    # (see Client.call).

    def publish(self, topic: str, messages: list[types_pb2.PublishMessage],
                timeout: Optional[float] = None) -> list[str]:
        """One Publish call (no batching, no retry: see Publisher); the ids."""
        req = bus_pb2.PublishRequest(topic=topic, messages=messages)
        return self._unary(self.bus.Publish, req, lambda r: list(r.message_ids),
                           timeout=timeout, wait_for_ready=True)

    def ack(self, subscription: str, ack_ids: list[str]) -> list[int]:
        """Per ack id: bus_pb2.ACK_STATUS_OK, or ACK_STATUS_EXPIRED (it may come again)."""
        req = bus_pb2.AckRequest(subscription=subscription, ack_ids=ack_ids)
        return self._unary(self.bus.Ack, req, statuses, wait_for_ready=True)

    def modify_ack_deadline(self, subscription: str, ack_ids: list[str], seconds: float,
                            reason: str = "") -> list[int]:
        """A new deadline from now; 0 is a nack (with an optional reason)."""
        req = bus_pb2.ModifyAckDeadlineRequest(
            subscription=subscription, ack_ids=ack_ids, ack_deadline=duration(seconds),
            reason=reason)
        return self._unary(self.bus.ModifyAckDeadline, req, statuses, wait_for_ready=True)
