"""A flow-controlled subscriber with lease management and reconnects."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Optional

import grpc

from pgbus._api import subscribe_request
from pgbus.client import Client
from pgbus.errors import PgbusError, from_rpc_error
from pgbus.v1 import bus_pb2, types_pb2


# Errors that a new stream would meet again; on any other the stream is
# opened again with backoff (a replica stopping ends it with UNAVAILABLE, or
# CANCELLED when its shutdown cancels the call).
PERMANENT = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
             grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED,
             grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNIMPLEMENTED)

# The most acks one Ack call carries (the server takes 10000; 1000 keeps a
# call's statement and answer short).
MAX_ACKS_PER_CALL = 1000


def settled(statuses: list[int], n: int) -> list[bool]:
    """Per ack id of a call of `n`: whether the answer `statuses` settled it
    (an answer without one status per id settles none of them)."""
    if len(statuses) != n:
        return [False] * n
    return [status == bus_pb2.ACK_STATUS_OK for status in statuses]


class Leases:
    """The unsettled deliveries a subscriber (sync or asyncio) keeps leased:
    each is extended by `ack_deadline` every `interval` seconds until it is
    settled or `max_extension` seconds have passed since it arrived (then it
    is given up and its lease runs out). Safe from any thread."""

    def __init__(self, ack_deadline: float, max_extension: float):
        self.ack_deadline = ack_deadline
        # A third of the deadline: two extensions may be late before a lease lapses.
        self.interval = max(ack_deadline / 3, 0.2)
        self._max_extension = max_extension
        self._lock = threading.Lock()
        self._since: dict[str, float] = {}  # ack id -> when it was received

    def add(self, ack_id: str) -> None:
        with self._lock:
            self._since[ack_id] = time.monotonic()

    def settle(self, message: "Delivery") -> bool:
        """Marks `message` settled and stops extending it; False when it was
        settled already (only the first ack or nack counts)."""
        with self._lock:
            if message.settled:
                return False
            message.settled = True
            self._since.pop(message.ack_id, None)
            return True

    def due(self) -> list[str]:
        """The ack ids to extend now; those past max_extension are given up."""
        now = time.monotonic()
        with self._lock:
            for ack_id in [a for a, t in self._since.items() if now - t >= self._max_extension]:
                del self._since[ack_id]
            return list(self._since)

    def __bool__(self) -> bool:
        with self._lock:
            return bool(self._since)


class Delivery:
    """What a delivery carries: ack_id, message (the pgbus.v1 Message),
    delivery_attempt; the settling is the subclass's (sync or asyncio)."""

    def __init__(self, subscriber, received: types_pb2.ReceivedMessage):
        self._subscriber = subscriber
        self.ack_id = received.ack_id
        self.message = received.message
        self.delivery_attempt = received.delivery_attempt
        self.settled = False

    @property
    def id(self) -> str:
        return self.message.id

    @property
    def attributes(self):
        return self.message.attributes


class Message(Delivery):
    """One delivery. `data` is the payload (fetched and SHA-256-checked on
    first use when it was uploaded: DataLossError on a mismatch). Call
    ack() when done or nack(reason) to have it redelivered; ack() returns
    True, or False when the lease was lost (the message may come again).
    ack() waits for the answer; ack_async() does not: it returns a
    concurrent.futures.Future of the same bool. A Subscriber's acks go in
    one Ack call at a time, and the next call carries every ack queued
    meanwhile (up to 1000), so handlers that do not wait let it settle
    thousands of messages a second in few calls. After stop(), an ack is a
    call of its own, made before ack_async() returns."""

    def __init__(self, subscriber: "Subscriber", received: types_pb2.ReceivedMessage):
        super().__init__(subscriber, received)
        self._data: Optional[bytes] = None

    @property
    def data(self) -> bytes:
        if self._data is None:
            if self.message.payload_by_reference:
                self._data = self._subscriber._client.retrieve(self.message)
            else:
                self._data = self.message.payload
        return self._data

    def ack(self) -> bool:
        return self.ack_async().result()

    def ack_async(self) -> "Future[bool]":
        return self._subscriber._ack_async(self)

    def nack(self, reason: str = "") -> bool:
        return self._subscriber._nack(self, reason)


class Subscriber:
    """Receives from one subscription on a stream and runs `handler(message)`
    on a pool of `workers` threads; at most `max_outstanding_messages` /
    `max_outstanding_bytes` are unacked at once (the server's flow control).

    While a handler runs longer than the ack deadline, its lease is
    extended (ModifyAckDeadline) every `ack_deadline / 3` seconds, up to
    `max_lease_extension` seconds in all, so a slow handler is not given to
    someone else. A message whose handler raised is nacked. When the server
    ends the stream (UNAVAILABLE: a replica stopping), it reconnects with
    backoff (any error but those in PERMANENT, which end it and are kept in
    `error`). stop() stops receiving, lets running handlers finish and
    settles their messages.
    """

    def __init__(self, client: Client, subscription: str,
                 handler: Callable[[Message], None], *,
                 max_outstanding_messages: int = 1000,
                 max_outstanding_bytes: int = 100 << 20,
                 ack_deadline: float = 30.0,
                 max_lease_extension: float = 3600.0,
                 workers: int = 8):
        self._client = client
        self._subscription = subscription
        self._handler = handler
        self._request = subscribe_request(subscription, max_outstanding_messages,
                                          max_outstanding_bytes, ack_deadline)
        self._leases = Leases(ack_deadline, max_lease_extension)
        self._pool = ThreadPoolExecutor(max_workers=workers,
                                        thread_name_prefix=f"pgbus-{subscription}")
        self._stopping = threading.Event()
        self._handlers_done = threading.Event()  # set by stop(): leases may lapse
        self._stream = None
        self.error: Optional[PgbusError] = None  # why it stopped, if not stop()
        self.reconnects = 0
        # Acks queued for the acker thread, which sends them one Ack call
        # at a time until stop(); afterwards each ack is a call of its own.
        self._acks: list[tuple[str, Future]] = []
        self._acks_cond = threading.Condition()
        self._acker_on = True
        self._acker_ending = False
        self.ack_calls = 0  # Ack calls sent
        self._receiver = threading.Thread(target=self._receive, daemon=True,
                                          name=f"pgbus-subscriber-{subscription}")
        self._leaser = threading.Thread(target=self._extend_leases, daemon=True,
                                        name=f"pgbus-leases-{subscription}")
        self._acker = threading.Thread(target=self._send_acks, daemon=True,
                                       name=f"pgbus-acks-{subscription}")
        self._receiver.start()
        self._leaser.start()
        self._acker.start()

    def stop(self, timeout: Optional[float] = None) -> None:
        self._stopping.set()
        stream = self._stream
        if stream is not None:
            stream.cancel()
        self._receiver.join(timeout)
        self._pool.shutdown(wait=True)  # running handlers finish and settle
        self._handlers_done.set()
        self._leaser.join(timeout)
        with self._acks_cond:  # what the handlers acked is sent first
            self._acker_ending = True
            self._acks_cond.notify()
        self._acker.join(timeout)

    def __enter__(self) -> "Subscriber":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _receive(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            try:
                self._stream = self._client.bus.Subscribe(self._request,
                                                          metadata=self._client.metadata,
                                                          wait_for_ready=True)
                for response in self._stream:
                    backoff = 0.1
                    for received in response.messages:
                        message = Message(self, received)
                        self._leases.add(message.ack_id)
                        self._pool.submit(self._handle, message)
                if self._stopping.is_set():
                    return
            except grpc.RpcError as err:
                if self._stopping.is_set():
                    return
                error = from_rpc_error(err)
                if error.code in PERMANENT:
                    self.error = error
                    self._stopping.set()
                    return
            except RuntimeError:  # the pool was shut down under us
                return
            # The stream ended (a replica stopping): reconnect with backoff.
            self.reconnects += 1
            self._stopping.wait(random.uniform(backoff / 2, backoff))
            backoff = min(backoff * 2, 5.0)

    def _handle(self, message: Message) -> None:
        try:
            self._handler(message)
        except Exception:  # noqa: BLE001 -- a failed handler means: redeliver
            if not message.settled:
                message.nack("handler raised an exception")

    def _ack_async(self, message: Message) -> "Future[bool]":
        future: Future = Future()
        if not self._leases.settle(message):
            future.set_result(False)
            return future
        with self._acks_cond:
            if self._acker_on:
                self._acks.append((message.ack_id, future))
                self._acks_cond.notify()
                return future
            self.ack_calls += 1
        future.set_result(self._ack([message.ack_id])[0])
        return future

    def _ack(self, ack_ids: list[str]) -> list[bool]:
        try:
            statuses = self._client.ack(self._subscription, ack_ids)
        except PgbusError:
            statuses = []
        return settled(statuses, len(ack_ids))

    def _send_acks(self) -> None:
        while True:
            with self._acks_cond:
                while not self._acks and not self._acker_ending:
                    self._acks_cond.wait()
                if not self._acks:
                    self._acker_on = False
                    return
                batch = self._acks[:MAX_ACKS_PER_CALL]
                del self._acks[:MAX_ACKS_PER_CALL]
                self.ack_calls += 1
            try:
                results = self._ack([a for a, _ in batch])
            except Exception as err:  # noqa: BLE001 -- the acker must outlive it
                for _, future in batch:
                    future.set_exception(err)
                continue
            for (_, future), ok in zip(batch, results):
                future.set_result(ok)

    def _nack(self, message: Message, reason: str) -> bool:
        if not self._leases.settle(message):
            return False
        try:
            statuses = self._client.modify_ack_deadline(self._subscription,
                                                        [message.ack_id], 0, reason)
        except PgbusError:
            return False
        return settled(statuses, 1)[0]

    def _extend_leases(self) -> None:
        # Until stop() has seen the running handlers finish (it used to spin
        # on the stopped event meanwhile, calling ModifyAckDeadline back to back).
        while not self._handlers_done.wait(self._leases.interval):
            ids = self._leases.due()
            if not ids:
                continue
            try:
                self._client.modify_ack_deadline(self._subscription, ids,
                                                 self._leases.ack_deadline)
            except PgbusError:
                pass  # the next round tries again; a lost lease shows at ack()
