"""The sans-I/O state machine, driven frame by frame with no socket."""

from __future__ import annotations

from typing import Any

import pytest

from sodp.errors import AuthError, CallError, DeltaError, ProtocolError, ServerError
from sodp.frames import Frame, FrameType, decode_frame, encode_frame
from sodp.protocol import (
    AuthRequired,
    CallFailed,
    CallSucceeded,
    ClientProtocol,
    ErrorReceived,
    Event,
    Phase,
    Ready,
    StateChanged,
    TokenRefreshed,
    WatchMeta,
    WatchSettled,
)

T = FrameType


def noop(value: Any, meta: WatchMeta) -> None:
    pass


def feed(p: ClientProtocol, ftype: int, body: Any = None, stream_id: int = 0) -> list[Event]:
    return p.receive_data(encode_frame(ftype, stream_id, 0, body))


def sent(p: ClientProtocol) -> list[Frame]:
    return [decode_frame(d) for d in p.data_to_send()]


def hello(auth: bool = False, **caps: Any) -> dict[str, Any]:
    return {"protocol": "sodp", "version": "1.0", "server": "t", "auth": auth, "capabilities": caps}


def ready(p: ClientProtocol | None = None) -> ClientProtocol:
    p = p or ClientProtocol()
    p.connection_made()
    assert feed(p, T.HELLO, hello(resume=True)) == [Ready(None)]
    return p


def init(p: ClientProtocol, key: str, value: Any, version: int, sid: int = 100) -> list[Event]:
    body = {"state": key, "version": version, "value": value, "initialized": value is not None}
    return feed(p, T.STATE_INIT, body, sid)


def test_no_auth_hello_makes_ready_and_flushes_watches_and_calls() -> None:
    p = ClientProtocol()
    p.watch("a", noop)
    p.watch_many(["b", "c"], noop, params={"x": 1})
    cid = p.call("state.set", {"state": "a", "value": 1})
    assert p.data_to_send() == []  # nothing before a connection
    p.connection_made()
    assert p.data_to_send() == []  # nothing before HELLO
    events = feed(p, T.HELLO, hello(multi_watch=True))
    assert events == [Ready(None)]
    assert p.capabilities == {"multi_watch": True}
    frames = sent(p)
    assert [(f.type, f.body) for f in frames] == [
        (T.WATCH, {"state": "a"}),
        (T.WATCH, {"states": ["b", "c"], "params": {"x": 1}}),  # one watch_many, one frame
        (T.CALL, {"call_id": cid, "method": "state.set", "args": {"state": "a", "value": 1}}),
    ]
    assert [f.seq for f in frames] == [1, 2, 3]
    assert all(f.stream_id >= 10 for f in frames[:2])


def test_auth_handshake() -> None:
    p = ClientProtocol()
    p.connection_made()
    assert feed(p, T.HELLO, hello(auth=True)) == [AuthRequired()]
    assert p.phase is Phase.AUTHENTICATING
    p.call("state.set", {"state": "a", "value": 1})
    p.authenticate("tok")
    assert [(f.type, f.body) for f in sent(p)] == [(T.AUTH, {"token": "tok"})]
    assert feed(p, T.AUTH_OK, {"sub": "alice"}) == [Ready("alice")]
    assert [f.type for f in sent(p)] == [T.CALL]
    # a later AUTH/AUTH_OK is an in-band refresh, not a new session
    p.authenticate("tok2")
    assert [f.body for f in sent(p)] == [{"token": "tok2"}]
    assert feed(p, T.AUTH_OK, {"sub": "alice"}) == [TokenRefreshed("alice")]
    assert sent(p) == []


def test_401_is_fatal_during_handshake_only() -> None:
    p = ClientProtocol()
    p.connection_made()
    feed(p, T.HELLO, hello(auth=True))
    (ev,) = feed(p, T.ERROR, {"code": 401, "message": "bad token"})
    assert isinstance(ev, ErrorReceived) and ev.fatal and isinstance(ev.error, AuthError)
    p = ready()
    (ev,) = feed(p, T.ERROR, {"code": 401, "message": "token expired"})
    assert isinstance(ev, ErrorReceived) and not ev.fatal and isinstance(ev.error, AuthError)


def test_watch_before_and_after_ready() -> None:
    p = ready()
    calls: list[tuple[Any, WatchMeta]] = []
    reg, cached = p.watch("k", lambda v, m: calls.append((v, m)))
    assert cached is None
    (w,) = sent(p)
    assert (w.type, w.body) == (T.WATCH, {"state": "k"})
    (ev,) = init(p, "k", {"a": 1}, 5, sid=42)
    assert isinstance(ev, StateChanged)
    assert ev.meta == WatchMeta(5, True, "init", "k")
    assert ev.value == {"a": 1} and len(ev.callbacks) == 1
    # a second watch shares the subscription and gets the cache at once
    _reg2, cached = p.watch("k", noop)
    assert sent(p) == []
    assert cached is not None and cached.meta.source == "cache" and cached.callbacks == (noop,)
    assert cached.value == {"a": 1}
    p.unsubscribe(reg)
    (ev,) = feed(
        p, T.DELTA, {"version": 6, "ops": [{"op": "UPDATE", "path": "/a", "value": 2}]}, 42
    )
    assert isinstance(ev, StateChanged) and ev.callbacks == (noop,)
    assert p.is_watching("k")
    assert p.get("k") == {"a": 2}


def test_uninitialized_key_is_known_and_cached() -> None:
    p = ready()
    p.watch("k", noop)
    (ev,) = init(p, "k", None, 0)
    assert isinstance(ev, StateChanged) and ev.meta == WatchMeta(0, False, "init", "k")
    _, cached = p.watch("k", noop)
    assert cached is not None and cached.meta == WatchMeta(0, False, "cache", "k")


def test_delta_routing_by_state_field_and_by_stream() -> None:
    p = ready()
    p.watch("a", noop)
    p.watch("b", noop)
    init(p, "a", {"n": 0}, 1, sid=10)
    init(p, "b", {"n": 0}, 2, sid=11)
    # stream id says "a" but `state` says "b": `state` wins
    (ev,) = feed(
        p,
        T.DELTA,
        {"state": "b", "version": 3, "ops": [{"op": "UPDATE", "path": "/n", "value": 1}]},
        10,
    )
    assert isinstance(ev, StateChanged) and ev.key == "b"
    # no `state` (older servers): the stream map from STATE_INIT
    (ev,) = feed(
        p, T.DELTA, {"version": 4, "ops": [{"op": "UPDATE", "path": "/n", "value": 7}]}, 10
    )
    assert isinstance(ev, StateChanged) and ev.key == "a" and ev.value == {"n": 7}
    # unknown stream, unwatched key: ignored
    assert feed(p, T.DELTA, {"version": 5, "ops": []}, 99) == []
    assert feed(p, T.DELTA, {"state": "zz", "version": 5, "ops": []}, 0) == []


def test_stale_or_duplicate_delta_is_skipped() -> None:
    p = ready()
    p.watch("a", noop)
    init(p, "a", {"n": 0}, 10)
    assert (
        feed(
            p,
            T.DELTA,
            {"state": "a", "version": 10, "ops": [{"op": "UPDATE", "path": "/n", "value": 1}]},
        )
        == []
    )
    assert (
        feed(
            p,
            T.DELTA,
            {"state": "a", "version": 9, "ops": [{"op": "UPDATE", "path": "/n", "value": 1}]},
        )
        == []
    )
    assert p.get("a") == {"n": 0}


def test_initialized_follows_root_ops() -> None:
    p = ready()
    p.watch("a", noop)
    init(p, "a", None, 0)
    (ev,) = feed(
        p,
        T.DELTA,
        {"state": "a", "version": 1, "ops": [{"op": "ADD", "path": "/", "value": {"x": 1}}]},
    )
    assert isinstance(ev, StateChanged) and ev.meta.initialized
    (ev,) = feed(p, T.DELTA, {"state": "a", "version": 2, "ops": [{"op": "REMOVE", "path": "/"}]})
    assert isinstance(ev, StateChanged) and not ev.meta.initialized and ev.value is None


def test_reconnect_resumes_known_keys_and_watches_the_rest() -> None:
    p = ready()
    p.watch("known", noop, params={"p": 1})
    p.watch("empty", noop)
    p.watch("pending", noop)
    init(p, "known", {"n": 1}, 7)
    init(p, "empty", None, 0)
    sent(p)
    cid_in_flight = p.call("state.set", {"state": "x", "value": 1})
    assert p.connection_lost() == [cid_in_flight]
    assert p.phase is Phase.CLOSED
    cid_queued = p.call("state.set", {"state": "x", "value": 2})  # while disconnected
    assert sent(p) == []
    p.connection_made()
    feed(p, T.HELLO, hello())
    frames = sent(p)
    assert [(f.type, f.body) for f in frames] == [
        (T.RESUME, {"state": "known", "since_version": 7, "params": {"p": 1}}),
        (T.WATCH, {"state": "empty"}),
        (T.WATCH, {"state": "pending"}),
        (
            T.CALL,
            {"call_id": cid_queued, "method": "state.set", "args": {"state": "x", "value": 2}},
        ),
    ]
    assert [f.seq for f in frames] == [1, 2, 3, 4]  # seq restarts per connection
    # the replay is routed by `state` before the STATE_INIT marker maps the stream
    (ev,) = feed(
        p,
        T.DELTA,
        {"state": "known", "version": 8, "ops": [{"op": "UPDATE", "path": "/n", "value": 2}]},
    )
    assert isinstance(ev, StateChanged) and ev.meta.source == "delta" and ev.value == {"n": 2}
    (ev,) = init(p, "known", {"n": 2}, 8, sid=500)
    assert isinstance(ev, StateChanged) and ev.meta.source == "init"


def test_restarted_server_state_init_resets_the_baseline() -> None:
    p = ready()
    p.watch("k", noop)
    init(p, "k", {"n": 1}, 50)
    p.connection_lost()
    p.connection_made()
    feed(p, T.HELLO, hello())
    (f,) = sent(p)
    assert f.type == T.RESUME and f.body["since_version"] == 50
    (ev,) = init(p, "k", None, 0)  # fresh in-memory server: the key is gone
    assert isinstance(ev, StateChanged) and ev.value is None and ev.meta.version == 0
    (ev,) = feed(
        p, T.DELTA, {"state": "k", "version": 1, "ops": [{"op": "ADD", "path": "/", "value": 1}]}
    )
    assert isinstance(ev, StateChanged) and ev.value == 1 and ev.meta.version == 1


def test_results() -> None:
    p = ready()
    ok = p.call("state.set", {"state": "a", "value": 1})
    bad = p.call("nope", {})
    sent(p)
    assert feed(p, T.RESULT, {"call_id": ok, "success": True, "data": {"version": 3}}) == [
        CallSucceeded(ok, {"version": 3})
    ]
    (ev,) = feed(
        p, T.RESULT, {"call_id": bad, "success": False, "data": "unknown method", "code": 404}
    )
    assert isinstance(ev, CallFailed) and isinstance(ev.error, CallError)
    assert (ev.error.code, ev.error.message, ev.error.method) == (404, "unknown method", "nope")
    # a late or foreign RESULT is ignored
    assert feed(p, T.RESULT, {"call_id": ok, "success": True, "data": None}) == []
    assert p.connection_lost() == []


def test_cancelled_calls_are_not_sent_and_late_results_ignored() -> None:
    p = ClientProtocol()
    cid = p.call("state.set", {"state": "a", "value": 1})
    p.cancel_call(cid)
    ready(p)
    assert sent(p) == []
    cid = p.call("state.set", {"state": "a", "value": 1})
    p.cancel_call(cid)
    assert feed(p, T.RESULT, {"call_id": cid, "success": True, "data": None}) == []


def test_error_frames_are_never_pinned_on_calls() -> None:
    p = ready()
    p.watch("secret", noop)
    (w,) = sent(p)
    p.call("state.set", {"state": "a", "value": 1})
    (ev,) = feed(p, T.ERROR, {"code": 403, "message": "denied"}, w.stream_id)
    assert isinstance(ev, ErrorReceived) and not ev.fatal
    assert isinstance(ev.error, ServerError)
    assert (ev.error.code, ev.error.key, ev.error.stream_id) == (403, "secret", w.stream_id)
    (ev,) = feed(p, T.ERROR, {"code": 429, "message": "slow down"})
    assert (
        isinstance(ev, ErrorReceived) and isinstance(ev.error, ServerError) and ev.error.key is None
    )
    assert len(p.connection_lost()) == 1  # the call is still pending, not failed


def test_heartbeat_is_echoed_in_any_phase() -> None:
    p = ClientProtocol()
    p.connection_made()
    assert feed(p, T.HEARTBEAT) == []
    (f,) = sent(p)
    assert (f.type, f.stream_id, f.body) == (T.HEARTBEAT, 0, None)


def test_unwatch() -> None:
    p = ready()
    p.watch("a", noop)
    init(p, "a", 1, 1, sid=10)
    sent(p)
    p.unwatch("a")
    (f,) = sent(p)
    assert (f.type, f.body) == (T.UNWATCH, {"state": "a"})
    assert not p.is_watching("a") and p.get("a") is None
    assert (
        feed(p, T.DELTA, {"version": 2, "ops": [{"op": "UPDATE", "path": "/", "value": 2}]}, 10)
        == []
    )
    p.unwatch("a")  # twice: nothing sent
    assert sent(p) == []


def set_root(p: ClientProtocol, key: str, version: int, value: Any) -> list[Event]:
    op = {"op": "UPDATE", "path": "/", "value": value}
    return feed(p, T.DELTA, {"state": key, "version": version, "ops": [op]})


def test_watch_many_sends_one_frame_for_new_keys() -> None:
    p = ready()
    p.watch("a", noop)
    init(p, "a", 1, 1)
    sent(p)
    regs, cached, group = p.watch_many(["a", "b", "c", "b"], noop, params={"q": 1})
    assert [r.key for r in regs] == ["a", "b", "c"]  # duplicates once
    assert cached == []  # held until the call is settled
    assert group is not None and group.new == ["b", "c"]
    (f,) = sent(p)
    assert (f.type, f.body) == (T.WATCH, {"states": ["b", "c"], "params": {"q": 1}})
    with pytest.raises(ValueError):
        p.watch("", noop)


def test_watch_many_of_known_keys_fires_the_cache_at_once() -> None:
    p = ready()
    p.watch("a", noop)
    init(p, "a", 1, 1)
    _, cached, group = p.watch_many(["a"], noop)
    assert group is None and [(c.key, c.meta.source) for c in cached] == [("a", "cache")]


def test_watch_many_with_a_bad_key_changes_nothing() -> None:
    p = ready()
    with pytest.raises(ValueError):
        p.watch_many(["ok", ""], noop)
    assert not p.is_watching("ok") and sent(p) == []


def test_watch_many_delivers_only_once_every_key_has_its_baseline() -> None:
    p = ready()
    p.watch("old", noop)
    init(p, "old", "o", 1)
    sent(p)
    calls: list[tuple[Any, WatchMeta]] = []

    def cb(v: Any, m: WatchMeta) -> None:
        calls.append((v, m))

    _, _, group = p.watch_many(["x", "old", "y"], cb)
    assert group is not None
    (w,) = sent(p)
    assert init(p, "x", {"n": 1}, 5, sid=200) == []  # held
    delta = {"state": "x", "version": 6, "ops": [{"op": "UPDATE", "path": "/n", "value": 2}]}
    assert feed(p, T.DELTA, delta, 200) == []  # applied, folded into the baseline
    assert p.get("x") == {"n": 2}
    # the already-watched key is not attached yet: its deltas do not reach cb
    (ev,) = feed(
        p,
        T.DELTA,
        {"state": "old", "version": 7, "ops": [{"op": "UPDATE", "path": "/", "value": "p"}]},
    )
    assert isinstance(ev, StateChanged) and ev.callbacks == (noop,)
    events = init(p, "y", None, 0, sid=201)
    assert [type(e) for e in events] == [StateChanged, StateChanged, StateChanged, WatchSettled]
    changed = [e for e in events if isinstance(e, StateChanged)]
    assert [(e.key, e.value, e.meta.source, e.meta.version) for e in changed] == [
        ("x", {"n": 2}, "init", 6),
        ("old", "p", "cache", 7),
        ("y", None, "init", 0),
    ]
    assert all(e.callbacks == (cb,) for e in changed)
    settled = events[-1]
    assert isinstance(settled, WatchSettled) and settled.group is group and settled.error is None
    # attached now: later changes reach cb
    (ev,) = feed(
        p,
        T.DELTA,
        {"state": "old", "version": 8, "ops": [{"op": "UPDATE", "path": "/", "value": "q"}]},
    )
    assert isinstance(ev, StateChanged) and set(ev.callbacks) == {noop, cb}
    assert w.body == {"states": ["x", "y"]}


def test_refused_watch_many_is_undone() -> None:
    p = ready()
    p.watch("old", noop)
    init(p, "old", "o", 1)
    sent(p)
    seen: list[Any] = []
    _, _, group = p.watch_many(["a", "denied", "old", "c"], lambda v, m: seen.append(v))
    (w,) = sent(p)
    assert w.body == {"states": ["a", "denied", "c"]}
    assert init(p, "a", 1, 2, sid=300) == []  # accepted key, held
    events = feed(p, T.ERROR, {"code": 403, "message": "access denied"}, w.stream_id)
    assert [type(e) for e in events] == [ErrorReceived, WatchSettled]
    err = events[0]
    assert isinstance(err, ErrorReceived) and isinstance(err.error, ServerError)
    assert err.error.code == 403 and not err.fatal
    settled = events[1]
    assert isinstance(settled, WatchSettled) and settled.group is group
    assert settled.error is err.error
    # nothing of the call stays: UNWATCH for every key it subscribed
    (u,) = sent(p)
    assert (u.type, u.body) == (T.UNWATCH, {"states": ["a", "denied", "c"]})
    assert [k for k in ("a", "denied", "c") if p.is_watching(k)] == []
    assert p.watched_keys() == ["old"]
    # late answers to the refused WATCH change nothing
    assert init(p, "c", 3, 4, sid=301) == []
    (ev,) = feed(
        p,
        T.DELTA,
        {"state": "old", "version": 9, "ops": [{"op": "UPDATE", "path": "/", "value": "n"}]},
    )
    assert isinstance(ev, StateChanged) and ev.callbacks == (noop,)  # never attached
    assert seen == []


def test_refused_watch_many_keeps_a_key_someone_else_watched_meanwhile() -> None:
    p = ready()
    p.watch_many(["a", "b"], noop)
    (w,) = sent(p)
    p.watch("a", noop)
    assert init(p, "a", 1, 2) == []
    events = feed(p, T.ERROR, {"code": 403, "message": "access denied"}, w.stream_id)
    (changed,) = [e for e in events if isinstance(e, StateChanged)]
    assert changed.key == "a" and changed.meta.source == "init" and len(changed.callbacks) == 1
    (u,) = sent(p)
    assert u.body == {"state": "b"}
    assert p.is_watching("a") and not p.is_watching("b")


def test_unsettled_watch_many_is_resent_whole_after_a_reconnect() -> None:
    p = ready()
    _, _, group = p.watch_many(["a", "b"], noop)
    sent(p)
    assert init(p, "a", 1, 2) == []
    p.connection_lost()
    p.connection_made()
    feed(p, T.HELLO, hello())
    (w,) = sent(p)
    assert (w.type, w.body) == (T.WATCH, {"states": ["a", "b"]})
    assert init(p, "a", 1, 2) == []
    events = init(p, "b", 2, 3)
    assert isinstance(events[-1], WatchSettled) and events[-1].error is None
    assert events[-1].group is group


def test_unwatch_of_the_last_pending_key_settles_the_call() -> None:
    p = ready()
    p.watch_many(["a", "b"], noop)
    sent(p)
    assert init(p, "a", 1, 2) == []
    events = p.unwatch("b")
    assert [type(e) for e in events] == [StateChanged, WatchSettled]


def test_unappliable_delta_is_reported_and_the_key_resynced() -> None:
    p = ready()
    p.watch("a", noop)
    init(p, "a", {"n": 1}, 1)
    sent(p)
    events = feed(p, T.DELTA, {"state": "a", "version": 2, "ops": [{"op": "MOVE", "path": "/n"}]})
    assert len(events) == 1 and isinstance(events[0], ErrorReceived)
    assert isinstance(events[0].error, DeltaError) and "a:" in str(events[0].error)
    assert [(f.type, f.body) for f in sent(p)] == [
        (T.UNWATCH, {"state": "a"}),
        (T.WATCH, {"state": "a"}),
    ]
    # deltas before the fresh baseline are dropped; the baseline is taken whole
    assert feed(p, T.DELTA, {"state": "a", "version": 3, "ops": []}) == []
    (ev,) = init(p, "a", {"n": 5}, 3)
    assert isinstance(ev, StateChanged) and ev.value == {"n": 5}


def test_garbage_and_unknown_frames_are_reported_not_raised() -> None:
    p = ready()
    (ev,) = p.receive_data(b"\xc1")
    assert isinstance(ev, ErrorReceived) and isinstance(ev.error, ProtocolError)
    (ev,) = feed(p, 0x42)
    assert isinstance(ev, ErrorReceived) and "0x42" in str(ev.error)
    (ev,) = feed(p, T.HELLO, hello())
    assert isinstance(ev, ErrorReceived)  # a second HELLO


def test_pattern_applies_every_delta_of_one_transaction_and_skips_overlaps() -> None:
    """A transaction sends a pattern one DELTA per touched key, all at one
    version: each is applied. A DELTA at the version a STATE_INIT already
    holds is an overlap and is skipped."""
    p = ready()
    p.watch("bank.*", noop)
    init(p, "bank.*", {"bank.a": 1}, 4)
    for op in ({"op": "UPDATE", "path": "/bank.a", "value": 2}, {"op": "ADD", "path": "/bank.b"}):
        (ev,) = feed(p, T.DELTA, {"state": "bank.*", "version": 5, "ops": [op]})
        assert isinstance(ev, StateChanged) and ev.meta.version == 5
    assert p.get("bank.*") == {"bank.a": 2, "bank.b": None}
    init(p, "bank.*", {"bank.a": 2, "bank.b": None}, 5, sid=101)
    assert (
        feed(
            p,
            T.DELTA,
            {"state": "bank.*", "version": 5, "ops": [{"op": "REMOVE", "path": "/bank.a"}]},
        )
        == []
    )
    assert feed(p, T.DELTA, {"state": "bank.*", "version": 3, "ops": []}) == []


def test_a_key_applies_a_version_once() -> None:
    """A key's own stream never repeats a version: a second DELTA of the
    version just applied is a duplicate (an append applied twice would
    corrupt the value)."""
    p = ready()
    p.watch("list", noop)
    init(p, "list", [1], 4)
    append = {"op": "ADD", "path": "/-", "value": 2}
    (ev,) = feed(p, T.DELTA, {"state": "list", "version": 5, "ops": [append]})
    assert isinstance(ev, StateChanged)
    assert feed(p, T.DELTA, {"state": "list", "version": 5, "ops": [append]}) == []
    assert p.get("list") == [1, 2]


def test_expires_at_follows_state_init_and_deltas() -> None:
    p = ready()
    p.watch("k", noop)
    (ev,) = feed(
        p,
        T.STATE_INIT,
        {"state": "k", "version": 1, "value": 1, "initialized": True, "expires_at": 9_000},
        100,
    )
    assert isinstance(ev, StateChanged) and ev.meta.expires_at == 9_000
    up = {"op": "UPDATE", "path": "/", "value": 2}
    (ev,) = feed(p, T.DELTA, {"state": "k", "version": 2, "ops": [up]})
    assert isinstance(ev, StateChanged) and ev.meta.expires_at == 9_000  # kept
    (ev,) = feed(p, T.DELTA, {"state": "k", "version": 3, "ops": [up], "expires_at": 12_000})
    assert isinstance(ev, StateChanged) and ev.meta.expires_at == 12_000  # moved
    (ev,) = feed(p, T.DELTA, {"state": "k", "version": 4, "ops": [up], "expires_at": 0})
    assert isinstance(ev, StateChanged) and ev.meta.expires_at is None  # removed
    feed(p, T.DELTA, {"state": "k", "version": 5, "ops": [up], "expires_at": 20_000})
    gone = {"op": "REMOVE", "path": "/"}
    (ev,) = feed(p, T.DELTA, {"state": "k", "version": 6, "ops": [gone]})
    assert isinstance(ev, StateChanged) and ev.meta.expires_at is None  # deleted
