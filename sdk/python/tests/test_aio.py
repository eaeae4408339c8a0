"""The shared scenarios of sdk/conformance/scenarios.md through the asyncio
API (pgbus.aio), against a live pgbusd. Each test names its scenario."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import time

import grpc
import grpc.aio
import pytest

import pgbus
from conftest import Server, operator, run_readme_block, sql
from pgbus.aio import AsyncClient, AsyncMessage


def run(coro, timeout: float = 60.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


class Inbox:
    """What receive()'s handler is given (acked unless told otherwise), and
    how many handlers held an unsettled message at once."""

    def __init__(self, settle=None, hold: float = 0.0):
        self.settle = settle
        self.hold = hold
        self.messages: list[AsyncMessage] = []
        self.concurrent = 0
        self.max_concurrent = 0
        self.changed = asyncio.Event()

    async def __call__(self, message: AsyncMessage) -> None:
        self.concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self.concurrent)
        await asyncio.sleep(self.hold)
        self.concurrent -= 1
        await (self.settle(message) if self.settle else message.ack())
        self.messages.append(message)
        self.changed.set()

    async def wait(self, n: int, timeout: float = 15.0) -> list[AsyncMessage]:
        end = time.monotonic() + timeout
        while len(self.messages) < n and time.monotonic() < end:
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), end - time.monotonic())
            except asyncio.TimeoutError:
                break
        return list(self.messages)


async def receive(client: AsyncClient, subscription: str, inbox: Inbox, n: int,
                  timeout: float = 15.0, **settings) -> list[AsyncMessage]:
    """Runs receive() until n messages were handled (or timeout), then stops."""
    sub = client.subscriber(subscription, **{k: v for k, v in settings.items()
                                             if k != "concurrency"})
    session = asyncio.get_running_loop().create_task(
        sub.receive(inbox, concurrency=settings.get("concurrency", 8)))
    got = await inbox.wait(n, timeout)
    sub.stop()
    await session
    return got


async def topic_with_subscription(client: AsyncClient, topic: str = "t",
                                  subscription: str = "s", **settings) -> None:
    await client.create_topic(topic)
    await client.create_subscription(subscription, topic, **settings)


def test_round_trip_with_attributes_priority_and_correlation(server):
    async def scenario():
        async with AsyncClient(server.target) as client:
            await topic_with_subscription(client)
            async with client.publisher("t") as pub:
                first = await pub.publish_nowait(b"plain")
                second = await pub.publish_nowait(b"urgent", attributes={"kind": "order"},
                                                  priority=5, correlation_id="c-42")
                ids = [await first, await second]
            got = {}
            async for m in client.subscriber("s").messages():
                got[m.id] = m
                assert await m.ack()
                if len(got) == 2:
                    break
            assert set(got) == set(ids)
            urgent = got[ids[1]]
            assert await urgent.data() == b"urgent"
            assert dict(urgent.attributes) == {"kind": "order"}
            assert (urgent.message.priority, urgent.message.correlation_id) == (5, "c-42")
            assert {m.delivery_attempt for m in got.values()} == {1}
    run(scenario())


def test_batching_makes_far_fewer_calls(server):
    async def scenario():
        async with AsyncClient(server.target) as client:
            await client.create_topic("t")
            pub = client.publisher("t", pgbus.BatchSettings(max_messages=100, max_delay=0.05))
            futures = [await pub.publish_nowait(str(i).encode()) for i in range(1000)]
            await pub.flush()
            ids = {f.result() for f in futures}
            await pub.close()
            assert len(ids) == 1000
            assert pub.rpcs <= 50
    run(scenario())
    assert sql(server.tenant, "SELECT count(*) FROM pgbus.messages") == "1000"


def test_ordering_key_keeps_its_order_through_batches(server):
    async def scenario():
        async with AsyncClient(server.target) as client:
            await topic_with_subscription(client)
            async with client.publisher("t", pgbus.BatchSettings(max_messages=7)) as pub:
                for i in range(50):
                    await pub.publish_nowait(str(i).encode(), ordering_key="k")
            got = await receive(client, "s", Inbox(), 50, concurrency=1)
            assert [int(m.message.payload) for m in got] == list(range(50))
    run(scenario())


def test_nack_redelivers_with_attempt_two(server):
    async def scenario():
        async with AsyncClient(server.target) as client:
            await topic_with_subscription(client)
            await client.publish("t", [pgbus.v1.types_pb2.PublishMessage(payload=b"work")])
            inbox = Inbox(settle=lambda m: m.nack("not yet") if m.delivery_attempt == 1
                          else m.ack())
            got = await receive(client, "s", inbox, 2, concurrency=1)
            assert [m.delivery_attempt for m in got] == [1, 2]
    run(scenario())


def test_acks_that_are_not_awaited_share_calls(server):
    async def scenario():
        async with AsyncClient(server.target) as client:
            await topic_with_subscription(client)
            n = 500
            await client.publish("t", [pgbus.v1.types_pb2.PublishMessage(payload=str(i).encode())
                                       for i in range(n)])
            acks = []

            async def ack_without_waiting(message):
                acks.append(asyncio.ensure_future(message.ack()))

            inbox = Inbox(settle=ack_without_waiting)
            sub = client.subscriber("s")
            session = asyncio.get_running_loop().create_task(sub.receive(inbox))
            got = await inbox.wait(n, timeout=30)
            assert len(got) == n
            assert await asyncio.gather(*acks) == [True] * n
            # One call at a time, each carrying what was acked meanwhile: far
            # fewer calls than acks (one each would be 500).
            assert sub.ack_calls <= n // 4
            assert await got[0].ack() is False  # settled once
            sub.stop()
            await session
            stats = await client.get_stats("s")
            assert stats.pending + stats.in_flight == 0
    run(scenario())


def test_a_slow_handler_keeps_its_lease(server):
    async def scenario():
        async with AsyncClient(server.target) as client:
            await topic_with_subscription(client, ack_deadline=1)
            await client.publish("t", [pgbus.v1.types_pb2.PublishMessage(payload=b"slow")])
            acked = []

            async def slow(m: AsyncMessage) -> None:
                await asyncio.sleep(3)  # three ack deadlines
                # True only while this delivery is the message's latest.
                acked.append(await m.ack())
                if m.message.payload == b"slow":
                    await client.publish("t", [pgbus.v1.types_pb2.PublishMessage(
                        payload=b"after")])

            got = await receive(client, "s", Inbox(settle=slow), 2, ack_deadline=1)
            # "after" was published once "slow" was acked: a redelivery of
            # "slow" would have come before it.
            assert [m.message.payload for m in got] == [b"slow", b"after"]
            assert acked == [True, True]
    run(scenario())


def test_flow_control_caps_outstanding_messages(server):
    async def scenario():
        async with AsyncClient(server.target) as client:
            await topic_with_subscription(client)
            await client.publish("t", [pgbus.v1.types_pb2.PublishMessage(payload=b"x")] * 20)
            inbox = Inbox(hold=0.2)
            got = await receive(client, "s", inbox, 20, timeout=30,
                                max_outstanding_messages=3, concurrency=10)
            assert len(got) == 20
            assert 2 <= inbox.max_concurrent <= 3
    run(scenario())


def test_large_payload_round_trip_checked(server):
    data = os.urandom(8 << 20)

    async def scenario():
        async with AsyncClient(server.target) as client:
            await topic_with_subscription(client, "files")
            async with client.publisher("files") as pub:
                message_id = await pub.publish(data)
            [m] = await receive(client, "s", Inbox(), 1)
            assert m.message.payload_by_reference
            assert m.id == message_id
            assert hashlib.sha256(await m.data()).digest() == hashlib.sha256(data).digest()
    run(scenario())


def test_data_loss_is_a_typed_error(server):
    async def scenario():
        async with AsyncClient(server.target) as client:
            await client.create_topic("files")
            async with client.publisher("files") as pub:
                message_id = await pub.publish(os.urandom(3 << 20))
            sql(server.tenant, "UPDATE pgbus.payload_chunks SET data = overlay(data placing "
                               "'\\x00ff'::bytea from 7) WHERE seq = 1")
            with pytest.raises(pgbus.DataLossError) as err:
                await client.retrieve(message_id)
            assert err.value.code == grpc.StatusCode.DATA_LOSS
    run(scenario())


class CountPublishesOut(grpc.aio.UnaryUnaryClientInterceptor):
    """Counts the Publish calls out at once, and the most seen."""

    def __init__(self):
        self.out = 0
        self.most = 0

    async def intercept_unary_unary(self, continuation, details, request):
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        if not method.endswith("/Publish"):
            return await continuation(details, request)
        self.out += 1
        self.most = max(self.most, self.out)
        try:
            call = await continuation(details, request)
            await call  # answered
            return call
        finally:
            self.out -= 1


def test_batches_without_ordering_keys_are_pipelined_and_keyed_ones_go_alone(server):
    async def scenario():
        count = CountPublishesOut()
        async with AsyncClient(server.target, interceptors=[count]) as client:
            await client.create_topic("t")
            settings = pgbus.BatchSettings(max_messages=10)
            pub = client.publisher("t", settings)
            futures = [await pub.publish_nowait(b"x") for _ in range(2000)]
            await pub.close()
            assert all(f.done() and not f.exception() for f in futures)
            assert 2 <= count.most <= settings.max_outstanding_calls
            # Every 5th message keyed, 10 a batch: every batch holds a key,
            # so each goes alone.
            count.most = 0
            pub = client.publisher("t", settings)
            for i in range(200):
                await pub.publish_nowait(str(i).encode(), ordering_key="k" if i % 5 == 0 else "")
            await pub.close()
            assert count.most == 1
    run(scenario())


class LoseFirstAnswer(grpc.aio.UnaryUnaryClientInterceptor):
    """Lets the first Publish reach the server and commit, then reports
    UNAVAILABLE to the caller, as if the answer was lost."""

    def __init__(self):
        self.publishes = 0

    async def intercept_unary_unary(self, continuation, details, request):
        call = await continuation(details, request)
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        if method.endswith("/Publish"):
            self.publishes += 1
            if self.publishes == 1:
                await call  # committed
                raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(),
                                           grpc.aio.Metadata(), details="the answer was lost")
        return call


def test_a_retried_publish_is_stored_once(server):
    lose = LoseFirstAnswer()

    async def scenario():
        async with AsyncClient(server.target, interceptors=[lose]) as client:
            await client.create_topic("t")
            async with client.publisher("t") as pub:
                return await pub.publish(b"charge 42")
    message_id = run(scenario())
    assert lose.publishes == 2  # the first answer was lost, the retry answered
    assert sql(server.tenant, "SELECT count(*) FROM pgbus.messages") == "1"
    assert sql(server.tenant, "SELECT id FROM pgbus.messages") == message_id


def test_the_subscriber_reconnects_after_a_restart_and_misses_nothing(server):
    async def scenario():
        async with AsyncClient(server.target) as client:
            await topic_with_subscription(client)
            inbox = Inbox()
            sub = client.subscriber("s")
            session = asyncio.get_running_loop().create_task(sub.receive(inbox))
            async with client.publisher("t") as pub:
                await pub.publish(b"before")
            await inbox.wait(1)
            await asyncio.to_thread(server.stop)  # SIGTERM: the stream ends
            await asyncio.to_thread(server.start)  # same port, same tenant
            async with client.publisher("t") as pub:
                await pub.publish(b"after")
            got = await inbox.wait(2, timeout=30)
            sub.stop()
            await session
            assert sub.reconnects >= 1
            assert sorted(m.message.payload for m in got) == [b"after", b"before"]
    run(scenario(), timeout=90)


def test_auth_errors_are_typed():
    s = Server(auth=True)

    async def scenario(key: str):
        async with AsyncClient(s.target, api_key="pgbus_0000000000000000_nope") as bad:
            with pytest.raises(pgbus.PgbusError) as err:
                await bad.create_topic("orders")
            assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
        async with AsyncClient(s.target, api_key=key) as publisher_only:
            with pytest.raises(pgbus.PgbusError) as err:
                await publisher_only.create_topic("orders")
            assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
            assert "admin" in err.value.message
    try:
        tenant = f"py-aio-{os.getpid()}-{time.monotonic_ns()}"
        operator("tenant", "create", tenant)
        run(scenario(operator("key", "issue", tenant, "--scopes", "publish", "--topics",
                              "orders")))
    finally:
        s.stop(signal.SIGKILL)


def test_tls(tmp_path):
    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=tmp_path, check=True, capture_output=True)

    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for name in ("ca", "other"):
        openssl("req", "-x509", *curve, "-days", "1", "-keyout", f"{name}.key", "-out",
                f"{name}.pem", "-subj", f"/CN=pgbus-aio-{name}")
    openssl("req", *curve, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (tmp_path / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-days", "1", "-in", "server.csr", "-CA", "ca.pem", "-CAkey",
            "ca.key", "-CAcreateserial", "-out", "server.pem", "-extfile", "server.ext")
    s = Server(args=["--tls-cert-file", str(tmp_path / "server.pem"),
                     "--tls-key-file", str(tmp_path / "server.key")])

    async def scenario():
        ca = (tmp_path / "ca.pem").read_bytes()
        async with AsyncClient(s.target, root_certificates=ca) as trusted:
            assert (await trusted.create_topic("secure")).name == "secure"
        other = (tmp_path / "other.pem").read_bytes()
        async with AsyncClient(s.target, root_certificates=other, timeout=3) as untrusted:
            with pytest.raises(pgbus.PgbusError) as err:
                await untrusted.get_topic("secure")
            assert err.value.code == grpc.StatusCode.UNAVAILABLE
    try:
        run(scenario())
    finally:
        s.stop(signal.SIGKILL)


def test_readme_quick_start_runs(server):
    scope = run_readme_block(server, lambda code: "pgbus.aio" in code)
    assert scope["received"] == [b"hello"]


def test_admin_calls_cover_the_proto(server):
    async def scenario():
        async with AsyncClient(server.target) as client:
            await client.create_topic("orders", retention=3600, dedup_window=300,
                                      max_message_bytes=4096)
            await client.create_topic("dead")
            orders = await client.get_topic("orders")
            assert (orders.retention.seconds, orders.dedup_window.seconds,
                    orders.max_message_bytes) == (3600, 300, 4096)
            assert sorted([t.name async for t in client.list_topics(page_size=1)]) == [
                "dead", "orders"]
            await client.create_subscription("billing", "orders", ack_deadline=10,
                                             max_delivery_attempts=2, dead_letter_topic="dead",
                                             min_backoff=0.1)
            billing = await client.get_subscription("billing")
            assert (billing.ack_deadline.seconds, billing.max_delivery_attempts,
                    billing.dead_letter_topic) == (10, 2, "dead")
            assert [s.name async for s in client.list_subscriptions("orders")] == ["billing"]
            [message_id] = await client.publish(
                "orders", [pgbus.v1.types_pb2.PublishMessage(payload=b"x", correlation_id="c-1")])
            assert [m.id async for m in client.list_messages("c-1")] == [message_id]

            await client.create_subscription("replay", "orders")
            assert (await client.get_stats("replay")).pending == 0
            await client.seek("replay", time.time() - 60)
            assert (await client.get_stats("replay")).pending == 1

            # Dead letters: nacked on both attempts allowed, the subscriber
            # open (the move happens when the subscription is next claimed).
            sub = client.subscriber("billing")
            session = asyncio.get_running_loop().create_task(
                sub.receive(lambda m: m.nack("cannot bill")))
            dead = []
            end = time.monotonic() + 20
            while not dead and time.monotonic() < end:
                await asyncio.sleep(0.05)
                dead = [m async for m in client.list_dead_letters("billing")]
            sub.stop()
            await session
            assert len(dead) == 1
            assert dead[0].attributes["pgbus.dead_letter.message_id"] == message_id
            assert len(await client.redrive_dead_letters("billing", limit=10)) == 1
            assert (await client.get_stats("billing")).dead_lettered == 1
    run(scenario())
