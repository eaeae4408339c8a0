"""The asyncio client: the same calls, publisher and subscriber as the
synchronous API, as coroutines, async iterators and async context managers
on grpc.aio.

    async with pgbus.aio.AsyncClient() as client:
        async with client.publisher("orders") as publisher:
            message_id = await publisher.publish(b"hello")
        async for message in client.subscriber("billing").messages():
            print(await message.data())
            await message.ack()
            break
"""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import AsyncIterator, Awaitable, BinaryIO, Callable, Optional, TypeVar

import grpc
import grpc.aio

from pgbus._api import (DEFAULT_INLINE_LIMIT, Api, PayloadCheck, backoff_delays,
                        connection_settings, duration, open_channel, subscribe_request,
                        upload_requests)
from pgbus.errors import PgbusError, from_rpc_error
from pgbus.publisher import BatchSettings
from pgbus.subscriber import MAX_ACKS_PER_CALL, PERMANENT, Delivery, Leases, settled
from pgbus.v1 import admin_pb2_grpc, bus_pb2, bus_pb2_grpc, types_pb2

__all__ = ["AsyncClient", "AsyncMessage", "AsyncPublisher", "AsyncSubscriber", "with_retries"]

T = TypeVar("T")


class AsyncClient(Api):
    """A connection to pgbusd for asyncio code; the arguments are those of
    pgbus.Client. Every call of pgbus.Client is here as a coroutine
    (list_* as async iterators)."""

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
        interceptors: Optional[list] = None,
    ):
        """`interceptors`: grpc.aio client interceptors for every call."""
        self.target, self.metadata = connection_settings(target, api_key)
        self.timeout = timeout
        self.channel = open_channel(grpc.aio, self.target, root_certificates, certificate_chain,
                                    private_key, options, interceptors=interceptors)
        self.bus = bus_pb2_grpc.BusServiceStub(self.channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self.channel)

    async def _call(self, method, request, timeout=None, wait_for_ready=False):
        try:
            return await method(request, metadata=self.metadata, timeout=timeout or self.timeout,
                                wait_for_ready=wait_for_ready)
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err) from None

    def _unary(self, method, request, extract, *, timeout=None, wait_for_ready=False):
        async def run():
            return extract(await self._call(method, request, timeout, wait_for_ready))
        return run()

    async def _pages(self, method, request, items):
        token = ""
        while True:
            resp = await self._call(method, request(token))
            for item in getattr(resp, items):
                yield item
            token = resp.next_page_token
            if not token:
                return

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def upload(self, topic: str, source: bytes | BinaryIO) -> bus_pb2.UploadPayloadResponse:
        """As Client.upload. A file object is read on the event loop's thread,
        1 MiB at a time."""
        try:
            return await self.bus.UploadPayload(upload_requests(topic, source),
                                                metadata=self.metadata, wait_for_ready=True)
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err) from None

    async def retrieve(self, message: types_pb2.Message | str,
                       out: Optional[BinaryIO] = None) -> bytes:
        """As Client.retrieve: the payload, checked against its SHA-256."""
        check = PayloadCheck(message, out)
        while not check.add(await self._call(self.bus.Retrieve, check.request())):
            pass
        return check.result()

    def publisher(self, topic: str, batch: Optional[BatchSettings] = None,
                  **kwargs) -> "AsyncPublisher":
        return AsyncPublisher(self, topic, batch, **kwargs)

    def subscriber(self, subscription: str, **kwargs) -> "AsyncSubscriber":
        return AsyncSubscriber(self, subscription, **kwargs)


async def with_retries(fn: Callable[[], Awaitable[T]], *, deadline: float = 60.0) -> T:
    """As pgbus.client.with_retries, for coroutines."""
    delays = backoff_delays(deadline)
    while True:
        try:
            return await fn()
        except PgbusError as err:
            delay = next(delays, None) if err.retryable else None
            if delay is None:
                raise
        await asyncio.sleep(delay)


class AsyncPublisher:
    """pgbus.Publisher for asyncio: batches are formed in publish order and
    sent up to `max_outstanding_calls` at once (a batch holding an ordering
    key alone, once the calls before it are answered), each retried whole
    (with generated idempotency keys, so a retried message is stored
    once). `await publish(...)` gives the message id; publish_nowait(...) a
    Future of it. flush() waits for what is queued; close() (or leaving
    `async with`) flushes and stops."""

    def __init__(self, client: AsyncClient, topic: str, batch: Optional[BatchSettings] = None,
                 *, inline_limit: int = DEFAULT_INLINE_LIMIT, retry_deadline: float = 60.0):
        self._client = client
        self._topic = topic
        self._batch = batch or BatchSettings()
        self._inline_limit = inline_limit
        self._retry_deadline = retry_deadline
        self._queue: list[tuple[types_pb2.PublishMessage, asyncio.Future]] = []
        self._queued_bytes = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        self._in_flight = 0
        self._waiting = False  # a batch was taken and waits for its turn to be sent
        self._sending: set[asyncio.Task] = set()  # held: the loop keeps only weak references
        self._answered = asyncio.Event()  # a call was answered
        self.rpcs = 0  # Publish calls made
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def publish(self, data: bytes | BinaryIO, **fields) -> str:
        """Publishes and waits for the id. `fields` are those of
        Publisher.publish (attributes, priority, correlation_id,
        ordering_key, idempotency_key, ttl)."""
        return await (await self.publish_nowait(data, **fields))

    async def publish_nowait(self, data: bytes | BinaryIO, *,
                             attributes: Optional[dict[str, str]] = None, priority: int = 0,
                             correlation_id: str = "", ordering_key: str = "",
                             idempotency_key: str = "",
                             ttl: Optional[float] = None) -> asyncio.Future:
        """Queues a message (uploading a large payload first) and returns a
        Future of its id without waiting for its batch."""
        if self._closed:
            raise RuntimeError("publish() after close()")
        message = types_pb2.PublishMessage(
            attributes=attributes or {}, priority=priority, correlation_id=correlation_id,
            ordering_key=ordering_key, idempotency_key=idempotency_key or uuid.uuid4().hex,
            ttl=duration(ttl))
        future = asyncio.get_running_loop().create_future()
        if isinstance(data, (bytes, bytearray, memoryview)) and len(data) <= self._inline_limit:
            message.payload = bytes(data)
        else:
            retry = self._retry_deadline if isinstance(data, (bytes, bytearray)) else 0
            try:
                up = await with_retries(lambda: self._client.upload(self._topic, data),
                                        deadline=retry)
            except PgbusError as err:
                future.set_exception(err)
                return future
            message.payload_handle = up.payload_handle
        self._queue.append((message, future))
        self._queued_bytes += len(message.payload)
        self._idle.clear()
        self._wake.set()
        return future

    async def flush(self) -> None:
        """Waits until everything published so far has been answered."""
        self._wake.set()
        await self._idle.wait()

    async def close(self) -> None:
        self._closed = True
        self._wake.set()
        await self._task

    async def __aenter__(self) -> "AsyncPublisher":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def _take_batch(self) -> list[tuple[types_pb2.PublishMessage, asyncio.Future]]:
        batch, size = [], 0
        while self._queue and len(batch) < self._batch.max_messages:
            n = len(self._queue[0][0].payload)
            if batch and size + n > self._batch.max_bytes:
                break
            batch.append(self._queue.pop(0))
            size += n
        self._queued_bytes -= size
        return batch

    def _full(self) -> bool:
        return (len(self._queue) >= self._batch.max_messages
                or self._queued_bytes >= self._batch.max_bytes)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closed:
                    await self._calls_below(1)
                    self._idle.set()
                    return
                if self._in_flight == 0:
                    self._idle.set()  # else the last answer sets it
                self._wake.clear()
                await self._wake.wait()
                continue
            # A batch fills for max_delay after its first message (unless
            # it is full, or the publisher closes).
            deadline = loop.time() + self._batch.max_delay
            while not self._full() and not self._closed and loop.time() < deadline:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), deadline - loop.time())
                except asyncio.TimeoutError:
                    break
            batch = self._take_batch()
            keyed = any(m.ordering_key for m, _ in batch)
            # A batch with an ordering key goes alone: once every call before
            # it is answered, and answered itself before the next is sent.
            self._waiting = True
            await self._calls_below(1 if keyed else max(1, self._batch.max_outstanding_calls))
            self._waiting = False
            self._in_flight += 1
            send = loop.create_task(self._send(batch))
            self._sending.add(send)
            send.add_done_callback(self._sending.discard)
            if keyed:
                await send

    async def _calls_below(self, n: int) -> None:
        while self._in_flight >= n:
            self._answered.clear()
            await self._answered.wait()

    async def _send(self, batch: list[tuple[types_pb2.PublishMessage, asyncio.Future]]) -> None:
        messages = [m for m, _ in batch]

        async def call():
            self.rpcs += 1
            return await self._client.publish(self._topic, messages)

        try:
            ids = await with_retries(call, deadline=self._retry_deadline)
            for (_, future), message_id in zip(batch, ids):
                if not future.done():
                    future.set_result(message_id)
        except PgbusError as err:
            for _, future in batch:
                if not future.done():
                    future.set_exception(err)
        finally:
            self._in_flight -= 1
            self._answered.set()
            if not self._queue and self._in_flight == 0 and not self._waiting:
                self._idle.set()


class AsyncMessage(Delivery):
    """One delivery (as pgbus.Message, with coroutines): `await data()` is
    the payload (retrieved and checked when it was uploaded); `await ack()`
    is True, or False when the lease was lost (it may come again);
    `await nack(reason)` gives it back for redelivery. A subscriber's acks
    go in one Ack call at a time, and the next call carries every ack made
    meanwhile (up to 1000): handlers that do not wait for their ack (keep
    `asyncio.ensure_future(message.ack())`) settle thousands of messages a
    second in few calls."""

    async def data(self) -> bytes:
        if self.message.payload_by_reference:
            return await self._subscriber._client.retrieve(self.message)
        return self.message.payload

    async def ack(self) -> bool:
        return await self._subscriber._settle(self, ack=True)

    async def nack(self, reason: str = "") -> bool:
        return await self._subscriber._settle(self, ack=False, reason=reason)


class AsyncSubscriber:
    """pgbus.Subscriber for asyncio. Either iterate `messages()` (settle
    each message yourself), or `await receive(handler)` to run the
    coroutine `handler(message)` for each message, at most `concurrency`
    at once, until stop() (a handler that raises nacks its message). Both
    keep the leases of unsettled messages alive (every ack_deadline / 3, up
    to max_lease_extension), reconnect with backoff when the server ends
    the stream (UNAVAILABLE: a replica stopping), and end with PgbusError
    on an error a new stream would meet again (NOT_FOUND, ...)."""

    def __init__(self, client: AsyncClient, subscription: str, *,
                 max_outstanding_messages: int = 1000,
                 max_outstanding_bytes: int = 100 << 20,
                 ack_deadline: float = 30.0,
                 max_lease_extension: float = 3600.0):
        self._client = client
        self._subscription = subscription
        self._request = subscribe_request(subscription, max_outstanding_messages,
                                          max_outstanding_bytes, ack_deadline)
        self._leases = Leases(ack_deadline, max_lease_extension)
        self._stopping = asyncio.Event()
        self._call = None
        self.reconnects = 0
        # Acks waiting for the next Ack call; one call is out at a time.
        self._acks: list[tuple[str, asyncio.Future]] = []
        self._acker: Optional[asyncio.Task] = None
        self.ack_calls = 0  # Ack calls sent

    def stop(self) -> None:
        """Ends messages() and receive() (which waits for running handlers)."""
        self._stopping.set()
        if self._call is not None:
            self._call.cancel()

    async def messages(self) -> AsyncIterator[AsyncMessage]:
        lease = asyncio.get_running_loop().create_task(self._extend_leases())
        stream = self._stream()
        try:
            async for message in stream:
                yield message
        finally:
            await stream.aclose()  # nacks what was received but not yielded
            lease.cancel()

    async def receive(self, handler: Callable[[AsyncMessage], Awaitable[None]], *,
                      concurrency: int = 8) -> None:
        slots = asyncio.Semaphore(concurrency)
        running: set[asyncio.Task] = set()

        async def handle(message: AsyncMessage) -> None:
            try:
                await handler(message)
            except Exception:  # noqa: BLE001 -- a failed handler means: redeliver
                if not message.settled:
                    await message.nack("handler raised an exception")
            finally:
                slots.release()

        lease = asyncio.get_running_loop().create_task(self._extend_leases())
        stream = self._stream()
        try:
            async for message in stream:
                await slots.acquire()
                task = asyncio.get_running_loop().create_task(handle(message))
                running.add(task)
                task.add_done_callback(running.discard)
        finally:
            # Running handlers finish, their leases kept alive meanwhile.
            await stream.aclose()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
            lease.cancel()

    async def _stream(self) -> AsyncIterator[AsyncMessage]:
        """The stream's messages, opened again after it ends; messages
        received but not taken when the iteration stops are nacked."""
        backoff = 0.1
        untaken: list[AsyncMessage] = []
        try:
            while not self._stopping.is_set():
                try:
                    self._call = self._client.bus.Subscribe(
                        self._request, metadata=self._client.metadata, wait_for_ready=True)
                    async for response in self._call:
                        backoff = 0.1
                        untaken = [AsyncMessage(self, r) for r in response.messages]
                        for m in untaken:
                            self._leases.add(m.ack_id)
                        while untaken and not self._stopping.is_set():
                            yield untaken.pop(0)
                        if self._stopping.is_set():
                            return
                except grpc.aio.AioRpcError as err:
                    error = from_rpc_error(err)
                    if self._stopping.is_set():
                        return
                    if error.code in PERMANENT:
                        raise error from None
                except asyncio.CancelledError:
                    if self._stopping.is_set():
                        return
                    raise
                if self._stopping.is_set():
                    return
                # The stream ended (a replica stopping): reconnect with backoff.
                self.reconnects += 1
                try:
                    await asyncio.wait_for(self._stopping.wait(),
                                           random.uniform(backoff / 2, backoff))
                except asyncio.TimeoutError:
                    pass
                backoff = min(backoff * 2, 5.0)
        finally:
            if self._call is not None:
                self._call.cancel()
            for m in untaken:
                await m.nack("subscriber stopped")

    async def _settle(self, message: AsyncMessage, *, ack: bool, reason: str = "") -> bool:
        if not self._leases.settle(message):
            return False
        if ack:
            future = asyncio.get_running_loop().create_future()
            self._acks.append((message.ack_id, future))
            if self._acker is None:
                # Starts after the callbacks already due: their acks go in
                # the same call.
                self._acker = asyncio.get_running_loop().create_task(self._send_acks())
            return await future
        try:
            statuses = await self._client.modify_ack_deadline(
                self._subscription, [message.ack_id], 0, reason)
        except PgbusError:
            return False
        return settled(statuses, 1)[0]

    async def _send_acks(self) -> None:
        try:
            while self._acks:
                batch = self._acks[:MAX_ACKS_PER_CALL]
                del self._acks[:MAX_ACKS_PER_CALL]
                self.ack_calls += 1
                try:
                    statuses = await self._client.ack(self._subscription, [a for a, _ in batch])
                except PgbusError:
                    statuses = []
                except BaseException:  # cancelled: so are the acks it carried
                    for _, future in batch:
                        future.cancel()
                    raise
                for (_, future), ok in zip(batch, settled(statuses, len(batch))):
                    if not future.done():
                        future.set_result(ok)
        finally:
            self._acker = None

    async def _extend_leases(self) -> None:
        while True:
            await asyncio.sleep(self._leases.interval)
            ids = self._leases.due()
            if ids:
                try:
                    await self._client.modify_ack_deadline(self._subscription, ids,
                                                           self._leases.ack_deadline)
                except PgbusError:
                    pass  # the next round tries again; a lost lease shows at ack()
