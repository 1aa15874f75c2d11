"""Exceptions raised by the SODP client.

Every exception the client raises on purpose derives from :class:`SodpError`.
Where a standard exception has the same meaning, the SODP one also derives from
it, so ``except ConnectionError`` and ``except TimeoutError`` keep working::

    SodpError
    ├── ConnectionLost      (also ConnectionError)  a call was in flight when the
    │                                               connection dropped, or the
    │                                               client was closed
    ├── CallTimeout         (also TimeoutError)     no RESULT within call_timeout
    ├── CallQueueFull       (also BufferError)      max_pending_calls calls already
    │                                               wait for a connection; nothing
    │                                               was queued
    ├── CallError           (also RuntimeError)     RESULT success=false; .code,
    │   │                                           .message, .method
    │   └── ConflictError                           409 from an ``if_version`` write
    │                                               (or a transaction op); .version
    │                                               is the key's current version,
    │                                               .op the failing op's index
    ├── UnsupportedError                            the server does not advertise
    │                                               the extension a call needs;
    │                                               nothing was sent
    ├── ServerError                                 an ERROR frame that is not
    │                                               about auth; .code, .message,
    │                                               .stream_id, .key
    ├── AuthError                                   refused at the handshake (401), or
    │                                               no token to send; stops
    │                                               reconnecting, raised by
    │                                               ``await client.ready``
    ├── ProtocolError       (also ValueError)       the server sent something that
    │   │                                           is not valid SODP
    │   └── FrameError                              bytes that are not a frame
    └── DeltaError          (also ValueError)       a DELTA that cannot be applied
                                                    (unknown op, impossible path)

The standard bases keep code written for the published 0.2.x client working:
it raised ``RuntimeError`` for refused calls, ``TimeoutError`` for timeouts and
``ConnectionError`` for lost connections.

``ServerError``, ``AuthError``, ``ProtocolError`` and ``DeltaError`` are also
delivered to the client's ``on_error`` callback; none of them is ever pinned on
an unrelated pending call. So is a ``ConnectionLost`` for a ``wss://``
certificate that does not verify (one per connection attempt).
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "CallError",
    "CallQueueFull",
    "CallTimeout",
    "ConflictError",
    "ConnectionLost",
    "DeltaError",
    "FrameError",
    "ProtocolError",
    "ServerError",
    "SodpError",
    "UnsupportedError",
]


class SodpError(Exception):
    """Base class of every error raised by this package."""


class ConnectionLost(SodpError, ConnectionError):
    """The connection dropped (or the client closed) before a RESULT arrived.

    The server may or may not have applied the call. (Not raised for a
    write that carries an ``idempotency_key``: that one is resent after the
    reconnect and applied once.)
    """


class CallTimeout(SodpError, TimeoutError):
    """No RESULT arrived within the call timeout."""


class CallQueueFull(SodpError, BufferError):
    """A call made while disconnected found the queue of calls waiting for a
    connection full (``max_pending_calls``). Nothing was queued or sent."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(
            f"{limit} calls already wait for a connection (max_pending_calls): "
            "call refused, nothing was sent"
        )


class CallError(SodpError, RuntimeError):
    """The server answered a CALL with ``success: false``."""

    def __init__(self, code: int, message: str, method: str = "") -> None:
        self.code = code
        self.message = message
        self.method = method
        where = f" {method}" if method else ""
        super().__init__(f"call{where} failed ({code}): {message}")


class ConflictError(CallError):
    """A conditional write (``if_version=``) found the key at another version.

    Nothing changed on the server. :attr:`version` is the key's current
    version, so the caller can re-read, recompute and retry; :attr:`op` is the
    index of the failing op in a :meth:`~sodp.SodpClient.transaction`
    (``None`` for a single write).
    """

    def __init__(self, version: int, message: str, method: str = "", op: int | None = None) -> None:
        self.version = version
        self.op = op
        super().__init__(409, message, method)


class UnsupportedError(SodpError):
    """The server does not advertise the extension a call needs.

    Raised before anything is sent. :attr:`capability` names the missing
    ``capabilities`` entry of the server's HELLO.
    """

    def __init__(self, capability: str, what: str = "") -> None:
        self.capability = capability
        about = what or capability
        super().__init__(
            f"{about} needs the server extension {capability!r}, "
            "which this server does not advertise in HELLO capabilities"
        )


class ServerError(SodpError):
    """An ERROR frame from the server (a denied WATCH, a rate limit, ...)."""

    def __init__(self, code: int, message: str, stream_id: int = 0, key: str | None = None) -> None:
        self.code = code
        self.message = message
        self.stream_id = stream_id
        self.key = key
        about = f" [{key}]" if key else ""
        super().__init__(f"server error {code}{about}: {message}")


class AuthError(SodpError):
    """Authentication failed; the client stops reconnecting."""

    def __init__(self, message: str, code: int = 401) -> None:
        self.code = code
        self.message = message
        super().__init__(f"authentication failed ({code}): {message}")


class ProtocolError(SodpError, ValueError):
    """The server sent something that is not valid SODP."""


class FrameError(ProtocolError):
    """Bytes that do not decode to a ``[type, stream_id, seq, body]`` frame."""


class DeltaError(SodpError, ValueError):
    """A delta op that cannot be applied: unknown ``op`` or an impossible path."""
