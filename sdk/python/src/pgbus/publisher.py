"""A batching publisher: many publish() calls, few Publish RPCs."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import BinaryIO, Optional

from pgbus.client import DEFAULT_INLINE_LIMIT, Client, duration, with_retries
from pgbus.errors import PgbusError
from pgbus.v1 import types_pb2


@dataclass
class BatchSettings:
    max_messages: int = 100  # per Publish call (the server takes up to 1000)
    max_bytes: int = 1 << 20  # payload bytes per call
    max_delay: float = 0.01  # seconds a message may wait for its batch to fill
    # Publish calls out at once; a batch holding an ordering key is sent
    # alone (after the calls before it are answered, before any after it).
    max_outstanding_calls: int = 4


@dataclass
class _Pending:
    message: types_pb2.PublishMessage
    future: Future = field(default_factory=Future)


class Publisher:
    """Collects messages for one topic into batches, formed in the order
    publish() was called, and publishes each batch in one call from
    background threads, up to `max_outstanding_calls` at once. A batch that
    holds an ordering key is sent alone, once the calls before it are
    answered, and retried whole before the next is sent (so an ordering key
    keeps its order through batching and retries).

    Every message gets an `idempotency_key` (a UUID, unless one is given),
    so a batch retried (for up to `retry_deadline` seconds) after
    UNAVAILABLE or DEADLINE_EXCEEDED -- whose
    first attempt may have been stored with its answer lost -- is stored
    once and answers the original ids. Payloads above `inline_limit` (or a
    file object) are uploaded in chunks first and published by handle.

    publish() returns a concurrent.futures.Future of the message id.
    flush() waits for everything queued; close() flushes and stops.
    """

    def __init__(self, client: Client, topic: str, batch: Optional[BatchSettings] = None,
                 *, inline_limit: int = DEFAULT_INLINE_LIMIT, retry_deadline: float = 60.0):
        self._client = client
        self._topic = topic
        self._batch = batch or BatchSettings()
        self._inline_limit = inline_limit
        self._retry_deadline = retry_deadline
        self._cv = threading.Condition()
        self._queue: list[_Pending] = []
        self._queued_bytes = 0
        self._in_flight = 0
        self._alone = False  # a batch with an ordering key is out: nothing else is taken
        self._closed = False
        self.rpcs = 0  # Publish calls made (tests and metrics)
        self._threads = [threading.Thread(target=self._run, name=f"pgbus-publisher-{topic}",
                                          daemon=True)
                         for _ in range(max(1, self._batch.max_outstanding_calls))]
        for thread in self._threads:
            thread.start()

    def publish(
        self,
        data: bytes | BinaryIO,
        *,
        attributes: Optional[dict[str, str]] = None,
        priority: int = 0,
        correlation_id: str = "",
        ordering_key: str = "",
        idempotency_key: str = "",
        ttl: Optional[float] = None,
    ) -> Future:
        message = types_pb2.PublishMessage(
            attributes=attributes or {},
            priority=priority,
            correlation_id=correlation_id,
            ordering_key=ordering_key,
            idempotency_key=idempotency_key or uuid.uuid4().hex,
            ttl=duration(ttl),
        )
        pending = _Pending(message)
        if isinstance(data, (bytes, bytearray, memoryview)) and len(data) <= self._inline_limit:
            message.payload = bytes(data)
        else:
            # Large: uploaded now, on the caller's thread (it streams; the
            # whole payload is never held here), then queued by handle.
            # A file object cannot be read again: its upload is not retried.
            retry = self._retry_deadline if isinstance(data, (bytes, bytearray)) else 0
            try:
                up = with_retries(lambda: self._client.upload(self._topic, data), deadline=retry)
            except PgbusError as err:
                pending.future.set_exception(err)
                return pending.future
            message.payload_handle = up.payload_handle
        with self._cv:
            if self._closed:
                raise RuntimeError("publish() after close()")
            self._queue.append(pending)
            self._queued_bytes += len(message.payload)
            self._cv.notify_all()
        return pending.future

    def flush(self) -> None:
        """Waits until everything published so far has been answered."""
        with self._cv:
            self._cv.notify_all()
            # _alone: a batch with an ordering key, taken from the queue, may
            # still be waiting for the calls before it.
            self._cv.wait_for(lambda: not self._queue and self._in_flight == 0
                              and not self._alone)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        for thread in self._threads:
            thread.join()

    def __enter__(self) -> "Publisher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _take_batch(self) -> tuple[list[_Pending], bool]:
        """Waits for a full batch, max_delay after the first message, or
        close; returns it (empty: closed and drained), and whether it holds
        an ordering key (then it is the only batch out)."""
        with self._cv:
            while True:
                # Nothing is taken while a batch with an ordering key is out.
                self._cv.wait_for(lambda: not self._alone and (self._queue or self._closed))
                if not self._queue:
                    return [], False
                deadline = time.monotonic() + self._batch.max_delay
                while (len(self._queue) < self._batch.max_messages
                       and self._queued_bytes < self._batch.max_bytes and not self._closed):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cv.wait(left)
                if not self._alone and self._queue:
                    break  # else another sender took it meanwhile
            batch, size, keyed = [], 0, False
            while self._queue and len(batch) < self._batch.max_messages:
                n = len(self._queue[0].message.payload)
                if batch and size + n > self._batch.max_bytes:
                    break
                keyed = keyed or bool(self._queue[0].message.ordering_key)
                batch.append(self._queue.pop(0))
                size += n
            self._queued_bytes -= size
            if keyed:
                # Sent once every call before it is answered, and alone.
                self._alone = True
                self._cv.wait_for(lambda: self._in_flight == 0)
            self._in_flight += 1
            return batch, keyed

    def _run(self) -> None:
        while True:
            batch, alone = self._take_batch()
            if not batch:
                return
            messages = [p.message for p in batch]

            def call():
                with self._cv:
                    self.rpcs += 1
                return self._client.publish(self._topic, messages)

            try:
                ids = with_retries(call, deadline=self._retry_deadline)
                for p, message_id in zip(batch, ids):
                    p.future.set_result(message_id)
            except PgbusError as err:
                for p in batch:
                    p.future.set_exception(err)
            finally:
                with self._cv:
                    self._in_flight -= 1
                    if alone:
                        self._alone = False
                    self._cv.notify_all()
