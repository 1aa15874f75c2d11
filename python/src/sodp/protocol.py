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
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal, TypeAlias

from .delta import apply_ops
from .errors import AuthError, CallError, DeltaError, ProtocolError, ServerError, SodpError
from .frames import Frame, FrameType, decode_frame, encode_frame
from .values import JsonValue

__all__ = [
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
    "WatchMeta",
]

FIRST_STREAM_ID = 10  # streams 1-9 are reserved by the contract

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

    Use ``source``, not ``initialized``, to tell the baseline from changes.
    """

    version: int
    initialized: bool
    source: Source = "delta"
    key: str = ""
    skipped: int = 0


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
    call_id: str
    error: CallError


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
)


# ── state ─────────────────────────────────────────────────────────────────────


class Registration:
    """One ``watch()`` registration; removing it removes only that callback."""

    __slots__ = ("callback", "key")

    def __init__(self, key: str, callback: WatchCallback) -> None:
        self.key = key
        self.callback = callback


@dataclass
class _Entry:
    key: str
    params: dict[str, Any] | None
    registrations: list[Registration] = field(default_factory=list)
    value: JsonValue = None
    version: int = 0
    initialized: bool = False
    known: bool = False  # a STATE_INIT baseline has been received

    def callbacks(self) -> tuple[WatchCallback, ...]:
        return tuple(r.callback for r in self.registrations)


@dataclass
class _Call:
    method: str
    body: dict[str, Any]


class ClientProtocol:
    """SODP client state machine; see the module docstring."""

    def __init__(self) -> None:
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

    # ── connection ────────────────────────────────────────────────────────────

    @property
    def ready(self) -> bool:
        return self.phase is Phase.READY

    def connection_made(self) -> None:
        self._reset_connection()
        self.phase = Phase.AWAITING_HELLO

    def connection_lost(self) -> list[str]:
        """Forget the connection; returns the ids of calls that were in flight."""
        failed = [cid for cid in self._calls if cid in self._in_flight]
        for cid in failed:
            del self._calls[cid]
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
            if entry.known and entry.version > 0:
                self._send_resume(entry)
            else:
                self._send_watch([entry.key], entry.params)
        queued, self._queued = self._queued, []
        for cid in queued:
            self._send_call(cid)
        return [Ready(sub)]

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
        entry.known = True
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
        if isinstance(version, int) and version <= entry.version:
            return []  # already applied (a replay overlapping what we have)
        ops = body.get("ops")
        if not isinstance(ops, list):
            ops = []
        try:
            value = apply_ops(entry.value, ops)
        except DeltaError as exc:
            return [ErrorReceived(DeltaError(f"{entry.key}: {exc}")), *self._resync(entry)]
        entry.value = value
        if isinstance(version, int):
            entry.version = version
        for op in ops:
            if op.get("path") in ("/", ""):
                entry.initialized = op.get("op") != "REMOVE"
            else:
                entry.initialized = True
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
        return [ErrorReceived(ServerError(code, message, stream_id, key))]

    def _changed(self, entry: _Entry, source: Source) -> StateChanged:
        meta = WatchMeta(entry.version, entry.initialized, source, entry.key)
        return StateChanged(entry.key, entry.value, meta, entry.callbacks())

    # ── subscriptions ─────────────────────────────────────────────────────────

    def watch(
        self, key: str, callback: WatchCallback, params: dict[str, Any] | None = None
    ) -> tuple[Registration, StateChanged | None]:
        """Register *callback*; returns it with a ``"cache"`` event if the key is known."""
        regs, cached = self.watch_many([key], callback, params)
        return regs[0], (cached[0] if cached else None)

    def watch_many(
        self, keys: Iterable[str], callback: WatchCallback, params: dict[str, Any] | None = None
    ) -> tuple[list[Registration], list[StateChanged]]:
        """Like :meth:`watch` for several keys; new keys go out in one WATCH frame."""
        regs: list[Registration] = []
        cached: list[StateChanged] = []
        new: list[str] = []
        for key in keys:
            if not isinstance(key, str) or not key:
                raise ValueError(f"state key must be a non-empty string, got {key!r}")
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry(key, params)
                new.append(key)
            elif entry.known:
                meta = WatchMeta(entry.version, entry.initialized, "cache", key)
                cached.append(StateChanged(key, entry.value, meta, (callback,)))
            reg = Registration(key, callback)
            entry.registrations.append(reg)
            regs.append(reg)
        if new and self.ready:
            self._send_watch(new, params)
        return regs, cached

    def unsubscribe(self, reg: Registration) -> None:
        """Remove one callback; the server subscription stays until :meth:`unwatch`."""
        entry = self._entries.get(reg.key)
        if entry is not None:
            entry.registrations = [r for r in entry.registrations if r is not reg]

    def unwatch(self, key: str) -> None:
        """Drop the key: UNWATCH on the server, and forget its value and callbacks."""
        if self._entries.pop(key, None) is None:
            return
        if self.ready:
            self._send(FrameType.UNWATCH, 0, {"state": key})
        self._stream_keys = {s: k for s, k in self._stream_keys.items() if k != key}

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

    def _send_watch(self, keys: list[str], params: dict[str, Any] | None) -> None:
        body: dict[str, Any] = {"state": keys[0]} if len(keys) == 1 else {"states": keys}
        if params is not None:
            body["params"] = params
        sid = self._new_stream(keys[0] if len(keys) == 1 else None)
        self._send(FrameType.WATCH, sid, body)

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

    def call(self, method: str, args: dict[str, Any]) -> str:
        """Queue a CALL (sent now if READY, else on READY); returns its call_id."""
        cid = uuid.uuid4().hex
        self._calls[cid] = _Call(method, {"call_id": cid, "method": method, "args": args})
        if self.ready:
            self._send_call(cid)
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

    def _send_call(self, cid: str) -> None:
        self._in_flight.add(cid)
        self._send(FrameType.CALL, 0, self._calls[cid].body)

    def _send(self, ftype: FrameType, stream_id: int, body: Any) -> None:
        self._seq += 1
        self._out.append(encode_frame(ftype, stream_id, self._seq, body))
