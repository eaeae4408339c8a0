from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PublishMessage(_message.Message):
    __slots__ = ("payload", "attributes", "priority", "correlation_id", "ordering_key", "idempotency_key", "ttl", "deliver_at", "sha256", "payload_handle")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    ORDERING_KEY_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    DELIVER_AT_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_HANDLE_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    attributes: _containers.ScalarMap[str, str]
    priority: int
    correlation_id: str
    ordering_key: str
    idempotency_key: str
    ttl: _duration_pb2.Duration
    deliver_at: _timestamp_pb2.Timestamp
    sha256: bytes
    payload_handle: str
    def __init__(self, payload: _Optional[bytes] = ..., attributes: _Optional[_Mapping[str, str]] = ..., priority: _Optional[int] = ..., correlation_id: _Optional[str] = ..., ordering_key: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., ttl: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., deliver_at: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., sha256: _Optional[bytes] = ..., payload_handle: _Optional[str] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("id", "topic", "payload", "payload_by_reference", "size", "sha256", "attributes", "priority", "correlation_id", "ordering_key", "publish_time", "expire_time", "deliver_time", "idempotency_key")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_BY_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    ORDERING_KEY_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    DELIVER_TIME_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    id: str
    topic: str
    payload: bytes
    payload_by_reference: bool
    size: int
    sha256: bytes
    attributes: _containers.ScalarMap[str, str]
    priority: int
    correlation_id: str
    ordering_key: str
    publish_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    deliver_time: _timestamp_pb2.Timestamp
    idempotency_key: str
    def __init__(self, id: _Optional[str] = ..., topic: _Optional[str] = ..., payload: _Optional[bytes] = ..., payload_by_reference: bool = ..., size: _Optional[int] = ..., sha256: _Optional[bytes] = ..., attributes: _Optional[_Mapping[str, str]] = ..., priority: _Optional[int] = ..., correlation_id: _Optional[str] = ..., ordering_key: _Optional[str] = ..., publish_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., deliver_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class ReceivedMessage(_message.Message):
    __slots__ = ("ack_id", "message", "delivery_attempt")
    ACK_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    ack_id: str
    message: Message
    delivery_attempt: int
    def __init__(self, ack_id: _Optional[str] = ..., message: _Optional[_Union[Message, _Mapping]] = ..., delivery_attempt: _Optional[int] = ...) -> None: ...

class Topic(_message.Message):
    __slots__ = ("name", "retention", "max_message_bytes", "message_ttl", "dedup_window", "create_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RETENTION_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_TTL_FIELD_NUMBER: _ClassVar[int]
    DEDUP_WINDOW_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    retention: _duration_pb2.Duration
    max_message_bytes: int
    message_ttl: _duration_pb2.Duration
    dedup_window: _duration_pb2.Duration
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., retention: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., max_message_bytes: _Optional[int] = ..., message_ttl: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., dedup_window: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., create_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Subscription(_message.Message):
    __slots__ = ("name", "topic", "filter", "ack_deadline", "max_delivery_attempts", "dead_letter_topic", "min_backoff", "max_backoff", "create_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    ACK_DEADLINE_FIELD_NUMBER: _ClassVar[int]
    MAX_DELIVERY_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTER_TOPIC_FIELD_NUMBER: _ClassVar[int]
    MIN_BACKOFF_FIELD_NUMBER: _ClassVar[int]
    MAX_BACKOFF_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    topic: str
    filter: str
    ack_deadline: _duration_pb2.Duration
    max_delivery_attempts: int
    dead_letter_topic: str
    min_backoff: _duration_pb2.Duration
    max_backoff: _duration_pb2.Duration
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., topic: _Optional[str] = ..., filter: _Optional[str] = ..., ack_deadline: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., max_delivery_attempts: _Optional[int] = ..., dead_letter_topic: _Optional[str] = ..., min_backoff: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., max_backoff: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ..., create_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
