"""The client side of SODP as a sans-I/O state machine.

:class:`ClientProtocol` never touches a socket or a clock. The I/O layer feeds
it the bytes of each received message (:meth:`ClientProtocol.receive_data`),
gets back :mod:`events <sodp.protocol>` to act on, and writes whatever
:meth:`ClientProtocol.data_to_send` returns, in order. Everything that must
survive a reconnect lives here: the watched keys with their cached value and
version, their callbacks, and calls not yet sent.

Connection lifecycle, one connection at a time::

    connection_made()           phase AWAITING_HELLO
      HELLO auth=false          -> READY            (event Ready)
      HELLO auth=true           -> AUTHENTICATING   (event AuthRequired)
        authenticate(token)     sends AUTH
        AUTH_OK                 -> READY            (event Ready)
        ERROR 401               event ErrorReceived(AuthError, fatal=True)
    READY:
      AUTH_OK after authenticate(new token)   event TokenRefreshed
    connection_lost()           phase CLOSED; in-flight calls are returned
                                so the I/O layer can fail them

On READY every watched key is re-subscribed: RESUME from its version when a
baseline is known and its version is > 0, WATCH otherwise; then queued calls
are sent.

Exactly-once writes (extension ``idempotency``): when the session's HELLO
advertises it, every mutating CALL (:data:`MUTATING`) goes out with an
``idempotency_key`` in its body, generated once per call unless the caller
gave one. A call in flight when the connection drops keeps its key and is
queued again, ahead of the calls made meanwhile, so it is resent on the next
session: the server answers a key it has applied with the original RESULT,
so the write is applied once. Calls without a key fail as before (their fate
is unknown). ``state.presence`` is the exception: its binding died with the
old session, so it is resent with a fresh key and applied (bound) again.
At most ``max_queued_calls`` calls wait for a session; more raise
:class:`~sodp.errors.CallQueueFull` (calls already sent are never dropped).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal, TypeAlias

from .delta import apply_ops
from .errors import (
    AuthError,
    CallError,
    CallQueueFull,
    ConflictError,
    ConnectionLost,
    DeltaError,
    ProtocolError,
    ServerError,
    SodpError,
    UnsupportedError,
)
from .frames import Frame, FrameType, decode_frame, encode_frame
from .values import JsonValue

__all__ = [
    "MUTATING",
    "AuthRequired",
    "CallFailed",
    "CallSucceeded",
    "ClientProtocol",
    "ErrorReceived",
    "Event",
    "Phase",
    "Ready",
    "Registration",
    "Source",
    "StateChanged",
    "TokenRefreshed",
    "WatchCallback",
    "WatchGroup",
    "WatchMeta",
    "WatchSettled",
    "check_idempotency_key",
]

FIRST_STREAM_ID = 10  # streams 1-9 are reserved by the contract

MUTATING = frozenset(
    {
        "state.set",
        "state.patch",
        "state.set_in",
        "state.delete",
        "state.presence",
        "state.transaction",
    }
)
"""The methods that get an ``idempotency_key`` when the server supports it."""

MAX_IDEMPOTENCY_KEY_BYTES = 128  # the contract: 1 to 128 bytes of UTF-8

Source: TypeAlias = Literal["cache", "init", "delta"]
"""Why a watch callback runs: see :class:`WatchMeta`."""


@dataclass(frozen=True)
class WatchMeta:
    """What a watch callback gets besides the value.

    * ``version`` — the key's version (one counter shared by all keys of a server)
    * ``initialized`` — ``False`` when the key has never been written (or was deleted)
    * ``source`` — ``"cache"`` (fired from ``watch()`` with the cached value),
      ``"init"`` (a STATE_INIT baseline: first load or after a reconnect) or
      ``"delta"`` (an incremental change)
    * ``key`` — the key this is about (useful with ``watch_many``)
    * ``skipped`` — how many older updates of this key this invocation replaced,
      because this (async) callback fell ``max_pending_callbacks`` behind; 0
      normally (see :class:`~sodp.client.SodpClient`)
    * ``expires_at`` — extension ``ttl``: when the key expires (Unix ms), or
      ``None`` when it has no deadline

    Use ``source``, not ``initialized``, to tell the baseline from changes.
    """

    version: int
    initialized: bool
    source: Source = "delta"
    key: str = ""
    skipped: int = 0
    expires_at: int | None = None


# The value parameter is ``Any``, not ``JsonValue``: a callback annotated with
# the shape it expects (``value: dict[str, int] | None``) must stay acceptable,
# and a parameter type that is a union would reject it (contravariance).
WatchCallback = Callable[[Any, WatchMeta], Awaitable[None] | None]


class Phase(Enum):
    CLOSED = "closed"
    AWAITING_HELLO = "awaiting_hello"
    AUTHENTICATING = "authenticating"
    READY = "ready"


# ── events ────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class AuthRequired:
    """HELLO asked for a token: call :meth:`ClientProtocol.authenticate`."""


@dataclass(frozen=True)
class Ready:
    """The session is usable: subscriptions and queued calls have been sent."""

    sub: str | None


@dataclass(frozen=True)
class TokenRefreshed:
    """AUTH_OK for an in-band token refresh on a live session."""

    sub: str | None


@dataclass(frozen=True)
class StateChanged:
    """A key's value changed (or was delivered): run ``callbacks``."""

    key: str
    value: JsonValue
    meta: WatchMeta
    callbacks: tuple[WatchCallback, ...]


@dataclass(frozen=True)
class CallSucceeded:
    call_id: str
    data: JsonValue


@dataclass(frozen=True)
class CallFailed:
    """A call's RESULT said ``success: false`` (a :class:`CallError`), or a
    queued call could not be sent safely on the new session (the server no
    longer advertises ``idempotency``: :class:`ConnectionLost` for a resend,
    :class:`UnsupportedError` for an explicit key)."""

    call_id: str
    error: SodpError


@dataclass(frozen=True)
class WatchSettled:
    """A ``watch_many`` call is settled: every key has its baseline (``error``
    is ``None``), or the server refused one and nothing of the call stayed
    subscribed (``error``)."""

    group: WatchGroup
    error: ServerError | None


@dataclass(frozen=True)
class ErrorReceived:
    """An error for the ``on_error`` callback. ``fatal``: stop reconnecting."""

    error: SodpError
    fatal: bool = False


Event = (
    AuthRequired
    | Ready
    | TokenRefreshed
    | StateChanged
    | CallSucceeded
    | CallFailed
    | ErrorReceived
    | WatchSettled
)


# ── state ─────────────────────────────────────────────────────────────────────


class Registration:
    """One ``watch()`` registration; removing it removes only that callback."""

    __slots__ = ("active", "callback", "key")

    def __init__(self, key: str, callback: WatchCallback) -> None:
        self.key = key
        self.callback = callback
        self.active = True


class WatchGroup:
    """The keys of one ``watch_many`` call, all-or-nothing.

    ``new`` are the keys the call subscribes on the server (sent in one
    WATCH); ``attach`` are registrations for keys that were already watched,
    attached only once the call succeeds. Until then no callback of the call
    runs: the new keys' values are tracked but their baselines are delivered
    (``"init"``) when the last of them has arrived.
    """

    __slots__ = ("attach", "new", "params", "regs", "remaining", "settled", "stream_id")

    def __init__(
        self, new: list[str], attach: list[Registration], regs: list[Registration]
    ) -> None:
        self.new = new
        self.attach = attach
        self.regs = regs
        self.params: dict[str, Any] | None = None
        self.remaining: set[str] = set(new)
        self.stream_id = 0
        self.settled = False


@dataclass
class _Entry:
    key: str
    params: dict[str, Any] | None
    registrations: list[Registration] = field(default_factory=list)
    value: JsonValue = None
    version: int = 0
    initialized: bool = False
    known: bool = False  # a STATE_INIT baseline has been received
    # The last change applied was a DELTA (not a STATE_INIT) at `version`:
    # a transaction sends a pattern one DELTA per key, all at one version.
    live: bool = False
    expires_at: int | None = None  # extension ttl: the deadline (Unix ms)
    group: WatchGroup | None = None  # a watch_many call not settled yet

    def callbacks(self) -> tuple[WatchCallback, ...]:
        return tuple(r.callback for r in self.registrations)

    def meta(self, source: Source) -> WatchMeta:
        return WatchMeta(self.version, self.initialized, source, self.key, 0, self.expires_at)


@dataclass
class _Call:
    method: str
    body: dict[str, Any]
    explicit_key: bool = False  # the caller chose the idempotency key
    resent: bool = False  # was in flight when a connection dropped


def check_idempotency_key(key: object) -> str:
    """*key* if it is a valid ``idempotency_key`` (a str of 1-128 UTF-8 bytes)."""
    if not isinstance(key, str):
        raise TypeError(f"idempotency_key must be a str, got {type(key).__name__}")
    size = len(key.encode())
    if not 1 <= size <= MAX_IDEMPOTENCY_KEY_BYTES:
        raise ValueError(
            f"idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} bytes of UTF-8, not {size}"
        )
    return key


def _deadline(value: object) -> int | None:
    """An ``expires_at`` field: Unix ms, or ``None`` (absent, or 0 = removed)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def _check_key(key: object) -> None:
    if not isinstance(key, str) or not key:
        raise ValueError(f"state key must be a non-empty string, got {key!r}")


class ClientProtocol:
    """SODP client state machine; see the module docstring."""

    def __init__(self, max_queued_calls: int = 1024) -> None:
        if max_queued_calls < 1:
            raise ValueError("max_queued_calls must be at least 1")
        self.max_queued_calls = max_queued_calls
        self.phase = Phase.CLOSED
        self.capabilities: dict[str, JsonValue] = {}
        self.server_auth = False
        self.sub: str | None = None
        self._entries: dict[str, _Entry] = {}
        self._calls: dict[str, _Call] = {}  # every call without a RESULT yet
        self._queued: list[str] = []  # call ids not yet sent, in order
        self._in_flight: set[str] = set()  # call ids sent on this connection
        # per connection
        self._out: list[bytes] = []
        self._seq = 0
        self._next_stream_id = FIRST_STREAM_ID
        self._stream_keys: dict[int, str] = {}  # from STATE_INIT
        self._sent_streams: dict[int, str] = {}  # our WATCH/RESUME stream ids
        self._groups: list[WatchGroup] = []  # watch_many calls not settled yet
        self._group_streams: dict[int, WatchGroup] = {}  # their WATCH stream ids

    # ── connection ────────────────────────────────────────────────────────────

    @property
    def ready(self) -> bool:
        return self.phase is Phase.READY

    def connection_made(self) -> None:
        self._reset_connection()
        self.phase = Phase.AWAITING_HELLO

    def connection_lost(self) -> list[str]:
        """Forget the connection; returns the ids of the calls that were in
        flight and failed with it. In-flight calls carrying an
        ``idempotency_key`` do not fail: they are queued again (ahead of the
        calls made meanwhile, in the order they were made) to be resent."""
        failed: list[str] = []
        requeued: list[str] = []
        for cid, call in self._calls.items():
            if cid not in self._in_flight:
                continue
            if "idempotency_key" not in call.body:
                failed.append(cid)
                continue
            call.resent = True
            if call.method == "state.presence" and not call.explicit_key:
                del call.body["idempotency_key"]  # bind again on the new session
            requeued.append(cid)
        for cid in failed:
            del self._calls[cid]
        self._queued = requeued + self._queued
        self._reset_connection()
        self.phase = Phase.CLOSED
        return failed

    def _reset_connection(self) -> None:
        self._in_flight.clear()
        self._out.clear()
        self._seq = 0
        self._next_stream_id = FIRST_STREAM_ID
        self._stream_keys.clear()
        self._sent_streams.clear()
        self._group_streams.clear()

    def authenticate(self, token: str) -> None:
        """Send AUTH: during the handshake, or on a READY session to refresh."""
        self._send(FrameType.AUTH, 0, {"token": token})

    def data_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    # ── receiving ─────────────────────────────────────────────────────────────

    def receive_data(self, data: bytes) -> list[Event]:
        try:
            frame = decode_frame(data)
        except ProtocolError as exc:
            return [ErrorReceived(exc)]
        return self.receive_frame(frame)

    def receive_frame(self, frame: Frame) -> list[Event]:
        body = frame.body if isinstance(frame.body, dict) else {}
        t = frame.type
        if t == FrameType.DELTA:
            return self._on_delta(frame.stream_id, body)
        if t == FrameType.HEARTBEAT:
            self._send(FrameType.HEARTBEAT, 0, None)
            return []
        if t == FrameType.STATE_INIT:
            return self._on_state_init(frame.stream_id, body)
        if t == FrameType.RESULT:
            return self._on_result(body)
        if t == FrameType.ERROR:
            return self._on_error(frame.stream_id, body)
        if t == FrameType.HELLO:
            return self._on_hello(body)
        if t == FrameType.AUTH_OK:
            return self._on_auth_ok(body)
        return [ErrorReceived(ProtocolError(f"unexpected frame type {frame.name()} from server"))]

    def _on_hello(self, body: dict[str, Any]) -> list[Event]:
        if self.phase is not Phase.AWAITING_HELLO:
            return [ErrorReceived(ProtocolError("unexpected HELLO"))]
        caps = body.get("capabilities")
        self.capabilities = dict(caps) if isinstance(caps, dict) else {}
        self.server_auth = bool(body.get("auth"))
        if self.server_auth:
            self.phase = Phase.AUTHENTICATING
            return [AuthRequired()]
        return self._become_ready(None)

    def _on_auth_ok(self, body: dict[str, Any]) -> list[Event]:
        sub = body.get("sub")
        sub = sub if isinstance(sub, str) else None
        if self.phase is Phase.AUTHENTICATING:
            return self._become_ready(sub)
        if self.phase is Phase.READY:
            self.sub = sub
            return [TokenRefreshed(sub)]
        return [ErrorReceived(ProtocolError("unexpected AUTH_OK"))]

    def _become_ready(self, sub: str | None) -> list[Event]:
        self.phase = Phase.READY
        self.sub = sub
        for entry in self._entries.values():
            if entry.group is not None:
                continue  # re-sent below, as its group
            if entry.known and entry.version > 0:
                self._send_resume(entry)
            else:
                self._send_watch([entry.key], entry.params)
        for group in self._groups:
            group.remaining = set(group.new)
            self._send_group(group)
        queued, self._queued = self._queued, []
        events: list[Event] = []
        for cid in queued:
            refused = self._send_call(cid)
            if refused is not None:
                events.append(refused)
        return [*events, Ready(sub)]

    def _on_state_init(self, stream_id: int, body: dict[str, Any]) -> list[Event]:
        key = body.get("state")
        if not isinstance(key, str):
            return [ErrorReceived(ProtocolError("STATE_INIT without a state key"))]
        self._stream_keys[stream_id] = key
        entry = self._entries.get(key)
        if entry is None:  # unwatched meanwhile
            return []
        version = body.get("version")
        entry.version = version if isinstance(version, int) else 0
        entry.value = body.get("value")
        entry.initialized = bool(body.get("initialized", entry.value is not None))
        entry.expires_at = _deadline(body.get("expires_at"))
        entry.known = True
        entry.live = False
        group = entry.group
        if group is not None:
            group.remaining.discard(key)
            return self._settle_if_complete(group)
        return [self._changed(entry, "init")]

    def _on_delta(self, stream_id: int, body: dict[str, Any]) -> list[Event]:
        # Route by `state` when present: RESUME replays arrive before the
        # STATE_INIT that would map their stream.
        key = body.get("state")
        if not isinstance(key, str):
            key = self._stream_keys.get(stream_id)
        entry = self._entries.get(key) if key is not None else None
        if entry is None or not entry.known:
            return []
        version = body.get("version")
        # A pattern may get several DELTAs of one version (a transaction's
        # keys); a key's own stream never repeats one.
        repeats = entry.live and "*" in entry.key
        if isinstance(version, int) and (
            version < entry.version or (version == entry.version and not repeats)
        ):
            return []  # already applied (a replay overlapping what we have)
        ops = body.get("ops")
        if not isinstance(ops, list):
            ops = []
        try:
            value = apply_ops(entry.value, ops)
        except DeltaError as exc:
            return [ErrorReceived(DeltaError(f"{entry.key}: {exc}")), *self._resync(entry)]
        entry.value = value
        entry.live = True
        if isinstance(version, int):
            entry.version = version
        if "expires_at" in body:
            entry.expires_at = _deadline(body["expires_at"])
        for op in ops:
            if op.get("path") in ("/", ""):
                entry.initialized = op.get("op") != "REMOVE"
            else:
                entry.initialized = True
        if not entry.initialized:
            entry.expires_at = None
        if entry.group is not None:
            return []  # folded into the baseline the group delivers when settled
        return [self._changed(entry, "delta")]

    def _resync(self, entry: _Entry) -> list[Event]:
        """The cache for *entry* can no longer be trusted: fetch a fresh baseline."""
        entry.known = False
        if self.ready:
            self._send(FrameType.UNWATCH, 0, {"state": entry.key})
            self._send_watch([entry.key], entry.params)
        return []

    def _on_result(self, body: dict[str, Any]) -> list[Event]:
        cid = body.get("call_id")
        if not isinstance(cid, str):
            return [ErrorReceived(ProtocolError("RESULT without a call_id"))]
        call = self._calls.pop(cid, None)
        if call is None:
            return []  # timed out or cancelled meanwhile
        self._in_flight.discard(cid)
        if body.get("success"):
            return [CallSucceeded(cid, body.get("data"))]
        code = body.get("code")
        data = body.get("data")
        message = data if isinstance(data, str) else repr(data)
        version = body.get("version")
        err: CallError
        if code == 409 and isinstance(version, int) and not isinstance(version, bool):
            op = body.get("op")
            err = ConflictError(version, message, call.method, op if isinstance(op, int) else None)
        else:
            err = CallError(code if isinstance(code, int) else 0, message, call.method)
        return [CallFailed(cid, err)]

    def _on_error(self, stream_id: int, body: dict[str, Any]) -> list[Event]:
        code = body.get("code")
        code = code if isinstance(code, int) else 0
        message = body.get("message")
        message = message if isinstance(message, str) else repr(message)
        if code == 401:
            # During the handshake a 401 is permanent: the token was refused.
            # On a live session it means the token expired; a reconnect with a
            # fresh token from the provider may succeed.
            return [ErrorReceived(AuthError(message), fatal=self.phase is not Phase.READY)]
        key = self._sent_streams.get(stream_id) if stream_id else None
        error = ServerError(code, message, stream_id, key)
        group = self._group_streams.get(stream_id) if stream_id else None
        if group is not None:
            return [ErrorReceived(error), *self._fail_group(group, error)]
        return [ErrorReceived(error)]

    # ── watch_many groups ─────────────────────────────────────────────────────

    def _send_group(self, group: WatchGroup) -> None:
        group.stream_id = self._send_watch(group.new, group.params)
        self._group_streams[group.stream_id] = group

    def _settle_if_complete(self, group: WatchGroup) -> list[Event]:
        if group.settled or group.remaining:
            return []
        self._end_group(group)
        events: list[Event] = []
        attach = {id(r) for r in group.attach}
        for reg in group.regs:
            entry = self._entries.get(reg.key)
            if entry is None or not reg.active:
                continue
            if id(reg) in attach:
                entry.registrations.append(reg)
                if entry.known:
                    meta = entry.meta("cache")
                    events.append(StateChanged(entry.key, entry.value, meta, (reg.callback,)))
            elif entry.group is None and entry.known:
                entry_events = self._changed(entry, "init")
                events.append(entry_events)
        events.append(WatchSettled(group, None))
        return events

    def _fail_group(self, group: WatchGroup, error: ServerError) -> list[Event]:
        """Undo a refused watch_many: nothing of the call stays subscribed."""
        self._end_group(group)
        events: list[Event] = []
        dropped: list[str] = []
        mine = {id(r) for r in group.regs}
        for key in group.new:
            entry = self._entries.get(key)
            if entry is None:
                continue
            entry.registrations = [r for r in entry.registrations if id(r) not in mine]
            if entry.registrations:
                # watch()ed meanwhile by someone else: theirs now, on its own
                if entry.known:
                    events.append(self._changed(entry, "init"))
                continue
            del self._entries[key]
            self._stream_keys = {s: k for s, k in self._stream_keys.items() if k != key}
            dropped.append(key)
        if dropped and self.ready:
            body = {"state": dropped[0]} if len(dropped) == 1 else {"states": dropped}
            self._send(FrameType.UNWATCH, 0, body)
        for reg in group.regs:
            reg.active = False
        events.append(WatchSettled(group, error))
        return events

    def _end_group(self, group: WatchGroup) -> None:
        group.settled = True
        if group in self._groups:
            self._groups.remove(group)
        self._group_streams.pop(group.stream_id, None)
        for key in group.new:
            entry = self._entries.get(key)
            if entry is not None and entry.group is group:
                entry.group = None

    def _changed(self, entry: _Entry, source: Source) -> StateChanged:
        meta = entry.meta(source)
        return StateChanged(entry.key, entry.value, meta, entry.callbacks())

    # ── subscriptions ─────────────────────────────────────────────────────────

    def watch(
        self, key: str, callback: WatchCallback, params: dict[str, Any] | None = None
    ) -> tuple[Registration, StateChanged | None]:
        """Register *callback*; returns it with a ``"cache"`` event if the key is known."""
        _check_key(key)
        entry = self._entries.get(key)
        cached = None
        if entry is None:
            entry = self._entries[key] = _Entry(key, params)
            if self.ready:
                self._send_watch([key], params)
        elif entry.known and entry.group is None:
            meta = entry.meta("cache")
            cached = StateChanged(key, entry.value, meta, (callback,))
        reg = Registration(key, callback)
        entry.registrations.append(reg)
        return reg, cached

    def watch_many(
        self, keys: Iterable[str], callback: WatchCallback, params: dict[str, Any] | None = None
    ) -> tuple[list[Registration], list[StateChanged], WatchGroup | None]:
        """Subscribe *callback* to several keys, all or nothing.

        Keys not watched yet go out in one WATCH frame and form a
        :class:`WatchGroup`: nothing of the call is delivered until each has
        its baseline, and if the server refuses one (an ERROR on that WATCH's
        stream) the call is undone (UNWATCH) and settles with the error.
        Returns the registrations, the ``"cache"`` events to fire now (only
        when every key was already known: no group), and the group.
        """
        keys = list(dict.fromkeys(keys))
        for key in keys:
            _check_key(key)
        regs = [Registration(key, callback) for key in keys]
        new = [key for key in keys if key not in self._entries]
        if not new:
            cached: list[StateChanged] = []
            for reg in regs:
                entry = self._entries[reg.key]
                entry.registrations.append(reg)
                if entry.known and entry.group is None:
                    meta = entry.meta("cache")
                    cached.append(StateChanged(reg.key, entry.value, meta, (callback,)))
            return regs, cached, None
        attach = [reg for reg in regs if reg.key not in new]
        group = WatchGroup(new, attach, regs)
        group.params = params
        for reg in regs:
            if reg.key in group.remaining:
                entry = self._entries[reg.key] = _Entry(reg.key, params, group=group)
                entry.registrations.append(reg)
        self._groups.append(group)
        if self.ready:
            self._send_group(group)
        return regs, [], group

    def unsubscribe(self, reg: Registration) -> None:
        """Remove one callback; the server subscription stays until :meth:`unwatch`."""
        reg.active = False
        entry = self._entries.get(reg.key)
        if entry is not None:
            entry.registrations = [r for r in entry.registrations if r is not reg]

    def unwatch(self, key: str) -> list[Event]:
        """Drop the key: UNWATCH on the server, and forget its value and callbacks.

        Returns events when this settles a ``watch_many`` call that was waiting
        only for this key."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return []
        if self.ready:
            self._send(FrameType.UNWATCH, 0, {"state": key})
        self._stream_keys = {s: k for s, k in self._stream_keys.items() if k != key}
        group = entry.group
        if group is not None:
            group.new = [k for k in group.new if k != key]
            group.remaining.discard(key)
            return self._settle_if_complete(group)
        return []

    def get(self, key: str) -> JsonValue:
        entry = self._entries.get(key)
        return entry.value if entry is not None else None

    def version(self, key: str) -> int | None:
        entry = self._entries.get(key)
        return entry.version if entry is not None and entry.known else None

    def is_watching(self, key: str) -> bool:
        return key in self._entries

    def watched_keys(self) -> list[str]:
        return list(self._entries)

    def _send_watch(self, keys: list[str], params: dict[str, Any] | None) -> int:
        body: dict[str, Any] = {"state": keys[0]} if len(keys) == 1 else {"states": keys}
        if params is not None:
            body["params"] = params
        sid = self._new_stream(keys[0] if len(keys) == 1 else None)
        self._send(FrameType.WATCH, sid, body)
        return sid

    def _send_resume(self, entry: _Entry) -> None:
        body: dict[str, Any] = {"state": entry.key, "since_version": entry.version}
        if entry.params is not None:
            body["params"] = entry.params
        self._send(FrameType.RESUME, self._new_stream(entry.key), body)

    def _new_stream(self, key: str | None) -> int:
        sid = self._next_stream_id
        self._next_stream_id += 1
        if key is not None:
            self._sent_streams[sid] = key
        return sid

    # ── calls ─────────────────────────────────────────────────────────────────

    def call(self, method: str, args: dict[str, Any], idempotency_key: str | None = None) -> str:
        """Queue a CALL (sent now if READY, else on READY); returns its call_id.

        Raises :class:`~sodp.errors.CallQueueFull` when not READY and
        ``max_queued_calls`` calls already wait. *idempotency_key* is sent
        as given (the caller checked the capability); otherwise a mutating
        call gets a generated one when the session supports it.
        """
        if not self.ready and len(self._queued) >= self.max_queued_calls:
            raise CallQueueFull(self.max_queued_calls)
        cid = uuid.uuid4().hex
        body: dict[str, Any] = {"call_id": cid, "method": method, "args": args}
        call = _Call(method, body)
        if idempotency_key is not None:
            body["idempotency_key"] = check_idempotency_key(idempotency_key)
            call.explicit_key = True
        self._calls[cid] = call
        if self.ready:
            refused = self._send_call(cid)
            if refused is not None:  # cannot happen on a live session, see _send_call
                raise refused.error
        else:
            self._queued.append(cid)
        return cid

    def cancel_call(self, call_id: str) -> None:
        """Forget a call (timed out or cancelled); a late RESULT is ignored."""
        if self._calls.pop(call_id, None) is not None:
            self._in_flight.discard(call_id)
            if call_id in self._queued:
                self._queued.remove(call_id)

    def drop_queued_calls(self) -> list[str]:
        """Forget every call not yet sent (the client is giving up); returns their ids."""
        dropped, self._queued = self._queued, []
        for cid in dropped:
            self._calls.pop(cid, None)
        return dropped

    def queued_calls(self) -> int:
        """How many calls wait for a session (made while disconnected, or resent)."""
        return len(self._queued)

    def _send_call(self, cid: str) -> CallFailed | None:
        """Send a call; returns its failure instead when it cannot be sent safely."""
        call = self._calls[cid]
        if (call.resent or "idempotency_key" in call.body) and not self.capabilities.get(
            "idempotency"
        ):
            # Only after a reconnect to a server that dropped the extension:
            # it would ignore the key, so a resend could apply twice.
            del self._calls[cid]
            error: SodpError
            if call.resent:
                error = ConnectionLost(
                    "the connection was lost with the call in flight, and the server "
                    "no longer advertises 'idempotency' to resend it safely"
                )
            else:
                error = UnsupportedError("idempotency", f"{call.method} with idempotency_key")
            return CallFailed(cid, error)
        if call.method in MUTATING and self.capabilities.get("idempotency"):
            call.body.setdefault("idempotency_key", uuid.uuid4().hex)
        self._in_flight.add(cid)
        self._send(FrameType.CALL, 0, call.body)
        return None

    def _send(self, ftype: FrameType, stream_id: int, body: Any) -> None:
        self._seq += 1
        self._out.append(encode_frame(ftype, stream_id, self._seq, body))
