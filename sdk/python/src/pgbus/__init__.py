"""pgbus: the Python client of the pgbus message bus.

Generated stubs live in pgbus.v1 (bus_pb2, admin_pb2, types_pb2 and their
*_pb2_grpc); this package adds a connection with defaults and deadlines,
a batching publisher with retries that never duplicate, a flow-controlled
subscriber with lease management, and large payloads checked end to end.
pgbus.aio has the same for asyncio.
"""

from pgbus.client import Client
from pgbus.errors import DataLossError, PgbusError
from pgbus.publisher import BatchSettings, Publisher
from pgbus.subscriber import Message, Subscriber
from pgbus.v1.bus_pb2 import ACK_STATUS_EXPIRED, ACK_STATUS_OK

__all__ = [
    "ACK_STATUS_EXPIRED",
    "ACK_STATUS_OK",
    "BatchSettings",
    "Client",
    "DataLossError",
    "Message",
    "PgbusError",
    "Publisher",
    "Subscriber",
]
