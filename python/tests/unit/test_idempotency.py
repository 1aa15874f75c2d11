"""Exactly-once writes in the sans-I/O state machine: which CALLs get an
``idempotency_key``, what is resent after a lost connection, and the bound
on calls waiting for a session."""

from __future__ import annotations

from typing import Any

import pytest

from sodp.errors import CallQueueFull, ConnectionLost, UnsupportedError
from sodp.frames import Frame, FrameType, decode_frame, encode_frame
from sodp.protocol import CallFailed, CallSucceeded, ClientProtocol, Event, Ready

T = FrameType


def feed(p: ClientProtocol, ftype: int, body: Any = None) -> list[Event]:
    return p.receive_data(encode_frame(ftype, 0, 0, body))


def sent(p: ClientProtocol) -> list[Frame]:
    return [decode_frame(d) for d in p.data_to_send()]


def connect(p: ClientProtocol, **caps: Any) -> list[Event]:
    p.connection_made()
    hello = {"protocol": "sodp", "version": "1.0", "server": "t", "auth": False}
    return feed(p, T.HELLO, {**hello, "capabilities": caps})


def calls(p: ClientProtocol) -> list[dict[str, Any]]:
    return [f.body for f in sent(p) if f.type == T.CALL]


WRITES = [
    ("state.set", {"state": "a", "value": 1}),
    ("state.patch", {"state": "a", "patch": {"x": 1}}),
    ("state.set_in", {"state": "a", "path": "/x", "value": 1}),
    ("state.delete", {"state": "a"}),
    ("state.presence", {"state": "a", "path": "/me", "value": 1}),
    ("state.transaction", {"ops": [{"method": "state.delete", "args": {"state": "a"}}]}),
]


def test_with_the_capability_every_write_gets_its_own_key_and_reads_none() -> None:
    p = ClientProtocol()
    connect(p, idempotency=True)
    for method, args in WRITES:
        p.call(method, args)
    p.call("state.get", {"state": "a"})
    p.call("state.keys", {})
    bodies = calls(p)
    keys = [b.get("idempotency_key") for b in bodies]
    assert all(isinstance(k, str) and 1 <= len(k) <= 128 for k in keys[:6])
    assert len(set(keys[:6])) == 6
    assert keys[6:] == [None, None]


def test_without_the_capability_no_key_and_in_flight_calls_fail() -> None:
    p = ClientProtocol()
    connect(p, resume=True)
    cid = p.call("state.set", {"state": "a", "value": 1})
    (body,) = calls(p)
    assert "idempotency_key" not in body
    assert p.connection_lost() == [cid]  # fails, as without the extension
    connect(p)
    assert calls(p) == []


def test_in_flight_writes_are_resent_first_with_the_same_key() -> None:
    p = ClientProtocol()
    connect(p, idempotency=True)
    a = p.call("state.set", {"state": "a", "value": 1})
    b = p.call("state.patch", {"state": "b", "patch": {"x": 1}}, idempotency_key="mine")
    read = p.call("state.get", {"state": "a"})
    first = {body["call_id"]: body for body in calls(p)}
    assert first[b]["idempotency_key"] == "mine"
    assert p.connection_lost() == [read]  # only the read fails: its fate is harmless
    c = p.call("state.set", {"state": "c", "value": 3})  # made while disconnected
    assert p.queued_calls() == 3
    assert connect(p, idempotency=True) == [Ready(None)]
    resent = calls(p)
    assert [body["call_id"] for body in resent] == [a, b, c]  # call order kept
    assert resent[0] == first[a] and resent[1] == first[b]
    assert "idempotency_key" in resent[2]
    # the RESULT of the resend resolves the original call
    assert feed(p, T.RESULT, {"call_id": a, "success": True, "data": {"version": 5}}) == [
        CallSucceeded(a, {"version": 5})
    ]


def test_presence_is_resent_with_a_fresh_key() -> None:
    """Its binding died with the old session: it must be applied again."""
    p = ClientProtocol()
    connect(p, idempotency=True)
    p.call("state.presence", {"state": "a", "path": "/me", "value": 1})
    (first,) = calls(p)
    p.connection_lost()
    connect(p, idempotency=True)
    (again,) = calls(p)
    assert again["call_id"] == first["call_id"]
    assert again["idempotency_key"] != first["idempotency_key"]


def test_a_resend_to_a_server_without_the_capability_fails_instead() -> None:
    p = ClientProtocol()
    connect(p, idempotency=True)
    resent = p.call("state.set", {"state": "a", "value": 1})
    sent(p)
    p.connection_lost()
    explicit = p.call("state.set", {"state": "b", "value": 1}, idempotency_key="k")
    plain = p.call("state.set", {"state": "c", "value": 1})
    events = connect(p)  # the new server ignores keys: a resend could apply twice
    assert [type(e) for e in events] == [CallFailed, CallFailed, Ready]
    first, second = events[0], events[1]
    assert isinstance(first, CallFailed) and first.call_id == resent
    assert isinstance(first.error, ConnectionLost)
    assert isinstance(second, CallFailed) and second.call_id == explicit
    assert isinstance(second.error, UnsupportedError)
    (body,) = calls(p)
    assert body["call_id"] == plain and "idempotency_key" not in body


def test_calls_waiting_for_a_session_are_bounded() -> None:
    p = ClientProtocol(max_queued_calls=2)
    p.call("state.set", {"state": "a", "value": 1})
    p.call("state.set", {"state": "a", "value": 2})
    with pytest.raises(CallQueueFull) as info:
        p.call("state.set", {"state": "a", "value": 3})
    assert info.value.limit == 2 and isinstance(info.value, BufferError)
    connect(p, idempotency=True)
    assert len(calls(p)) == 2
    for i in range(5):  # on a live session nothing waits: no bound
        p.call("state.set", {"state": "a", "value": i})
    assert len(calls(p)) == 5
    # in-flight writes are requeued even past the bound; new ones are refused
    p.connection_lost()
    assert p.queued_calls() == 7
    with pytest.raises(CallQueueFull):
        p.call("state.set", {"state": "a", "value": 9})
    with pytest.raises(ValueError, match="max_queued_calls"):
        ClientProtocol(max_queued_calls=0)


@pytest.mark.parametrize("key", ["", "x" * 129, "é" * 65])
def test_bad_explicit_keys_are_refused_locally(key: str) -> None:
    p = ClientProtocol()
    with pytest.raises(ValueError, match="1 to 128 bytes"):
        p.call("state.set", {"state": "a", "value": 1}, idempotency_key=key)
    with pytest.raises(TypeError):
        p.call("state.set", {"state": "a", "value": 1}, idempotency_key=5)  # type: ignore[arg-type]
    assert p.queued_calls() == 0
