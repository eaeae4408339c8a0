"""The shared scenarios of sdk/conformance/scenarios.md, against a live
pgbusd. Each test names its scenario."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import threading
import time

import grpc
import pytest

import pgbus
from conftest import Server, operator, run_readme_block, sql


class Inbox:
    """Collects what a Subscriber's handler receives (and acks it unless
    told otherwise)."""

    def __init__(self, ack=True, hold: float = 0.0):
        self.ack = ack
        self.hold = hold
        self.messages: list[pgbus.Message] = []
        self.cv = threading.Condition()
        self.concurrent = 0
        self.max_concurrent = 0

    def __call__(self, message: pgbus.Message) -> None:
        with self.cv:
            self.concurrent += 1
            self.max_concurrent = max(self.max_concurrent, self.concurrent)
        time.sleep(self.hold)
        # Counted down before the message is settled: once it is, the
        # server may hand its credit to the next message at once.
        with self.cv:
            self.concurrent -= 1
        result = self.ack(message) if callable(self.ack) else (message.ack() if self.ack else None)
        with self.cv:
            self.messages.append(message)
            self.cv.notify_all()
        return result

    def wait(self, n: int, timeout: float = 15.0) -> list[pgbus.Message]:
        with self.cv:
            self.cv.wait_for(lambda: len(self.messages) >= n, timeout)
            return list(self.messages)


def test_round_trip_with_attributes_priority_and_correlation(client):
    client.create_topic("orders")
    client.create_subscription("billing", "orders")
    with pgbus.Publisher(client, "orders") as pub:
        low = pub.publish(b"low", priority=0)
        high = pub.publish(b"high", attributes={"region": "eu"}, priority=5,
                           correlation_id="order-42")
        ids = [low.result(10), high.result(10)]
    inbox = Inbox()
    with pgbus.Subscriber(client, "billing", inbox):
        got = inbox.wait(2)
    assert sorted(m.id for m in got) == sorted(ids)
    by_data = {m.data: m for m in got}
    assert by_data[b"high"].attributes["region"] == "eu"
    assert by_data[b"high"].message.priority == 5
    assert by_data[b"high"].message.correlation_id == "order-42"
    assert all(m.delivery_attempt == 1 for m in got)


def test_batching_makes_far_fewer_calls(client):
    client.create_topic("t")
    with pgbus.Publisher(client, "t", pgbus.BatchSettings(max_messages=100,
                                                         max_delay=0.05)) as pub:
        futures = [pub.publish(f"m{i}".encode()) for i in range(1000)]
        pub.flush()
        ids = [f.result(30) for f in futures]
        rpcs = pub.rpcs
    assert len(set(ids)) == 1000
    assert rpcs <= 50, f"{rpcs} Publish calls for 1000 messages"
    assert sql(client_tenant(client), "SELECT count(*) FROM pgbus.messages") == "1000"


def client_tenant(client: pgbus.Client) -> str:
    return CURRENT_TENANT[client.target]


CURRENT_TENANT: dict[str, str] = {}


@pytest.fixture(autouse=True)
def _remember_tenant(server):
    CURRENT_TENANT[server.target] = server.tenant


def test_ordering_key_keeps_its_order_through_batches(client):
    client.create_topic("t")
    client.create_subscription("s", "t")
    with pgbus.Publisher(client, "t", pgbus.BatchSettings(max_messages=7)) as pub:
        for i in range(50):
            pub.publish(str(i).encode(), ordering_key="customer-1")
    inbox = Inbox()
    # One handler thread, as in the other SDKs' suites: with several, a
    # handler that acked 40 may record it after another recorded 41, which
    # the server delivered only once 40 was acked.
    with pgbus.Subscriber(client, "s", inbox, workers=1):
        got = inbox.wait(50)
    assert [int(m.data) for m in got] == list(range(50))


def test_nack_redelivers_with_attempt_two(client):
    client.create_topic("t")
    client.create_subscription("s", "t")
    with pgbus.Publisher(client, "t") as pub:
        pub.publish(b"work").result(10)
    inbox = Inbox(ack=lambda m: m.nack("not yet") if m.delivery_attempt == 1 else m.ack())
    with pgbus.Subscriber(client, "s", inbox):
        got = inbox.wait(2)
    assert [m.delivery_attempt for m in got[:2]] == [1, 2]


def test_acks_that_do_not_wait_share_calls(client):
    client.create_topic("t")
    client.create_subscription("s", "t")
    n = 500
    with pgbus.Publisher(client, "t") as pub:
        for i in range(n):
            pub.publish(str(i).encode())
    futures, first = [], []

    def ack_without_waiting(message):
        if message.data == b"0":
            first.append(message)  # settled after stop(), below
        else:
            futures.append(message.ack_async())

    inbox = Inbox(ack=ack_without_waiting)
    subscriber = pgbus.Subscriber(client, "s", inbox)
    try:
        got = inbox.wait(n, timeout=60)
        assert len(got) == n
        assert [f.result(30) for f in futures] == [True] * (n - 1)
        # One call at a time, each carrying what queued meanwhile: far
        # fewer calls than acks (one each would be 499).
        assert subscriber.ack_calls <= n // 4
        # Settled once, whichever way.
        settled = next(m for m in got if m.data == b"1")
        assert settled.ack_async().result(30) is False
    finally:
        subscriber.stop()
    # After stop() an ack is a call of its own, and still lands.
    assert first[0].ack_async().result(30) is True
    stats = client.get_stats("s")
    assert stats.pending + stats.in_flight == 0


def test_a_slow_handler_keeps_its_lease(client):
    # Ack deadline 1 s; the handler takes 3 s: the lease is extended, so
    # the message is not delivered again meanwhile.
    client.create_topic("t")
    client.create_subscription("s", "t", ack_deadline=1)
    with pgbus.Publisher(client, "t") as pub:
        pub.publish(b"slow").result(10)
    acked = []

    def slow_then_next(message):
        acked.append(message.ack())  # True only while this delivery is the latest
        if message.data == b"slow":
            with pgbus.Publisher(client, "t") as pub:
                pub.publish(b"after").result(10)

    inbox = Inbox(ack=slow_then_next, hold=3.0)
    with pgbus.Subscriber(client, "s", inbox, ack_deadline=1):
        # "after" is published once "slow" was acked: a redelivery of "slow"
        # (its lease lost) would have come before it.
        got = inbox.wait(2, timeout=30)
    assert [m.data for m in got] == [b"slow", b"after"]
    assert acked == [True, True]
    assert got[0].delivery_attempt == 1


def test_flow_control_caps_outstanding_messages(client):
    client.create_topic("t")
    client.create_subscription("s", "t")
    with pgbus.Publisher(client, "t") as pub:
        for i in range(20):
            pub.publish(b"x")
    inbox = Inbox(hold=0.2)
    with pgbus.Subscriber(client, "s", inbox, max_outstanding_messages=3, workers=10):
        inbox.wait(20, timeout=30)
    assert len(inbox.messages) == 20
    assert inbox.max_concurrent <= 3


def test_large_payload_round_trip_checked(client):
    client.create_topic("files")
    client.create_subscription("s", "files")
    data = os.urandom(8 << 20)
    with pgbus.Publisher(client, "files") as pub:
        message_id = pub.publish(data).result(60)
    inbox = Inbox()
    with pgbus.Subscriber(client, "s", inbox):
        got = inbox.wait(1)
    assert got[0].message.payload_by_reference
    assert got[0].id == message_id
    assert hashlib.sha256(got[0].data).digest() == hashlib.sha256(data).digest()


def test_data_loss_is_a_typed_error(client, server):
    client.create_topic("files")
    data = os.urandom(3 << 20)
    with pgbus.Publisher(client, "files") as pub:
        message_id = pub.publish(data).result(60)
    sql(server.tenant, "UPDATE pgbus.payload_chunks SET data = overlay(data placing "
                       "'\\x00ff'::bytea from 7) WHERE seq = 1")
    with pytest.raises(pgbus.DataLossError) as err:
        client.retrieve(message_id)
    assert err.value.code == grpc.StatusCode.DATA_LOSS


class LoseFirstAnswer(grpc.UnaryUnaryClientInterceptor):
    """Lets the first Publish reach the server and commit, then reports
    UNAVAILABLE to the caller, as if the answer was lost."""

    def __init__(self):
        self.publishes = 0

    def intercept_unary_unary(self, continuation, details, request):
        outcome = continuation(details, request)
        if details.method.endswith("/Publish"):
            self.publishes += 1
            if self.publishes == 1:
                outcome.result()  # committed
                raise LostAnswer()
        return outcome


class LostAnswer(grpc.RpcError):
    def code(self):
        return grpc.StatusCode.UNAVAILABLE

    def details(self):
        return "the answer was lost"


def test_a_retried_publish_is_stored_once(client, server):
    client.create_topic("t")
    lose = LoseFirstAnswer()
    client.bus = pgbus.v1.bus_pb2_grpc.BusServiceStub(grpc.intercept_channel(client.channel, lose))
    with pgbus.Publisher(client, "t") as pub:
        message_id = pub.publish(b"charge 42").result(30)
    assert lose.publishes == 2  # the first answer was lost, the retry answered
    assert sql(server.tenant, "SELECT count(*) FROM pgbus.messages") == "1"
    assert sql(server.tenant, "SELECT id FROM pgbus.messages") == message_id


class CountPublishesOut(grpc.UnaryUnaryClientInterceptor):
    """Counts the Publish calls out at once, and the most seen."""

    def __init__(self):
        self.lock = threading.Lock()
        self.out = 0
        self.most = 0

    def intercept_unary_unary(self, continuation, details, request):
        if not details.method.endswith("/Publish"):
            return continuation(details, request)
        with self.lock:
            self.out += 1
            self.most = max(self.most, self.out)
        try:
            outcome = continuation(details, request)
            outcome.result()  # answered
            return outcome
        finally:
            with self.lock:
                self.out -= 1


def test_batches_without_ordering_keys_are_pipelined_and_keyed_ones_go_alone(client):
    client.create_topic("t")
    count = CountPublishesOut()
    client.bus = pgbus.v1.bus_pb2_grpc.BusServiceStub(grpc.intercept_channel(client.channel, count))
    settings = pgbus.BatchSettings(max_messages=10)
    with pgbus.Publisher(client, "t", settings) as pub:
        futures = [pub.publish(b"x") for _ in range(2000)]
        for f in futures:
            f.result(30)
    assert 2 <= count.most <= settings.max_outstanding_calls
    # Every 5th message keyed, 10 a batch: every batch holds a key, so each
    # goes alone.
    count.most = 0
    with pgbus.Publisher(client, "t", settings) as pub:
        for i in range(200):
            pub.publish(str(i).encode(), ordering_key="k" if i % 5 == 0 else "")
    assert count.most == 1


def test_the_subscriber_reconnects_after_a_restart_and_misses_nothing(server, client):
    client.create_topic("t")
    client.create_subscription("s", "t")
    inbox = Inbox()
    with pgbus.Subscriber(client, "s", inbox) as sub:
        with pgbus.Publisher(client, "t") as pub:
            pub.publish(b"before").result(10)
        inbox.wait(1)
        server.stop()  # SIGTERM: the stream ends with UNAVAILABLE
        server.start()  # same port, same tenant
        with pgbus.Publisher(client, "t") as pub:
            pub.publish(b"after").result(60)
        got = inbox.wait(2, timeout=30)
        assert sub.reconnects >= 1
        assert sub.error is None
    assert sorted(m.data for m in got) == [b"after", b"before"], f"stopped by {sub.error}"



def test_auth_errors_are_typed():
    s = Server(auth=True)
    try:
        tenant = f"py-{os.getpid()}-{time.monotonic_ns()}"
        operator("tenant", "create", tenant)
        key = operator("key", "issue", tenant, "--scopes", "publish", "--topics", "orders")
        with s.client(api_key="pgbus_0000000000000000_nope") as bad:
            with pytest.raises(pgbus.PgbusError) as err:
                bad.create_topic("orders")
            assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
        with s.client(api_key=key) as publisher_only:
            with pytest.raises(pgbus.PgbusError) as err:
                publisher_only.create_topic("orders")
            assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
            assert "admin" in err.value.message
    finally:
        s.stop(signal.SIGKILL)


def test_tls(tmp_path):
    def run(*args):
        subprocess.run(["openssl", *args], cwd=tmp_path, check=True, capture_output=True)

    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *curve, "-days", "1", "-keyout", "ca.key", "-out", "ca.pem",
        "-subj", "/CN=pgbus-py-ca")
    run("req", *curve, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (tmp_path / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-days", "1", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-extfile", "server.ext")
    s = Server(args=["--tls-cert-file", str(tmp_path / "server.pem"),
                     "--tls-key-file", str(tmp_path / "server.key")])
    try:
        ca = (tmp_path / "ca.pem").read_bytes()
        with s.client(root_certificates=ca) as trusted:
            assert trusted.create_topic("secure").name == "secure"
        # Another CA than the one that signed the server's certificate: the
        # handshake fails.
        other = (tmp_path / "other.pem")
        run("req", "-x509", *curve, "-days", "1", "-keyout", "other.key", "-out", "other.pem",
            "-subj", "/CN=pgbus-py-other")
        with s.client(root_certificates=other.read_bytes(), timeout=3) as untrusted:
            with pytest.raises(pgbus.PgbusError) as err:
                untrusted.get_topic("secure")
            assert err.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        s.stop(signal.SIGKILL)


def test_readme_quick_start_runs(server):
    scope = run_readme_block(server, lambda code: "pgbus.aio" not in code)
    assert scope["received"] == [b"hello"]


def test_admin_calls_cover_the_proto(client):
    client.create_topic("orders", retention=3600, dedup_window=300, max_message_bytes=4096)
    client.create_topic("dead")
    orders = client.get_topic("orders")
    assert (orders.retention.seconds, orders.dedup_window.seconds, orders.max_message_bytes) == (
        3600, 300, 4096)
    assert sorted(t.name for t in client.list_topics(page_size=1)) == ["dead", "orders"]
    client.create_subscription("billing", "orders", ack_deadline=10, max_delivery_attempts=2,
                               dead_letter_topic="dead", min_backoff=0.1)
    billing = client.get_subscription("billing")
    assert (billing.ack_deadline.seconds, billing.max_delivery_attempts,
            billing.dead_letter_topic) == (10, 2, "dead")
    assert [s.name for s in client.list_subscriptions("orders")] == ["billing"]
    [message_id] = client.publish(
        "orders", [pgbus.v1.types_pb2.PublishMessage(payload=b"x", correlation_id="c-1")])
    assert [m.id for m in client.list_messages("c-1")] == [message_id]

    # Seek: a subscription created after the publish has nothing, until it
    # is sought back before it.
    client.create_subscription("replay", "orders")
    assert client.get_stats("replay").pending == 0
    client.seek("replay", time.time() - 60)
    assert client.get_stats("replay").pending == 1

    # Dead letters: nacked on both attempts allowed. The subscriber stays
    # open: the move happens when the subscription is next claimed.
    dead = []
    with pgbus.Subscriber(client, "billing", lambda m: m.nack("cannot bill")):
        deadline = time.monotonic() + 20
        while not dead and time.monotonic() < deadline:
            time.sleep(0.05)
            dead = list(client.list_dead_letters("billing"))
    assert len(dead) == 1
    assert dead[0].attributes["pgbus.dead_letter.message_id"] == message_id
    assert len(client.redrive_dead_letters("billing", limit=10)) == 1
    assert client.get_stats("billing").dead_lettered == 1
