"""sodp — asyncio client for the State-Oriented Data Protocol.

Layout:

* :mod:`sodp.frames` — bytes <-> ``[type, stream_id, seq, body]``
* :mod:`sodp.delta` — applying DeltaOps (path copying, never mutates)
* :mod:`sodp.protocol` — the sans-I/O client state machine
* :mod:`sodp.backoff`, :mod:`sodp.jwt` — reconnect delays, token expiry
* :mod:`sodp.client` — :class:`SodpClient` and :class:`StateRef` over asyncio
* :mod:`sodp.errors` — the exception tree (see its docstring)
* :mod:`sodp.values` — ``JsonValue``, ``WriteResult`` (the types of what comes back)
* :mod:`sodp.bench` — ``python -m sodp.bench``
"""

from .client import SodpClient, StateRef, TokenProvider, Transacted, Transaction, WatchHandle
from .delta import apply_ops
from .errors import (
    AuthError,
    CallError,
    CallQueueFull,
    CallTimeout,
    ConflictError,
    ConnectionLost,
    DeltaError,
    FrameError,
    ProtocolError,
    ServerError,
    SodpError,
    UnsupportedError,
)
from .protocol import Source, WatchCallback, WatchMeta
from .values import FetchResult, HistoryEntry, HistoryPage, JsonValue, KeysPage, WriteResult

__version__ = "0.3.0"

__all__ = [
    "AuthError",
    "CallError",
    "CallQueueFull",
    "CallTimeout",
    "ConflictError",
    "ConnectionLost",
    "DeltaError",
    "FetchResult",
    "FrameError",
    "HistoryEntry",
    "HistoryPage",
    "JsonValue",
    "KeysPage",
    "ProtocolError",
    "ServerError",
    "SodpClient",
    "SodpError",
    "Source",
    "StateRef",
    "TokenProvider",
    "Transacted",
    "Transaction",
    "UnsupportedError",
    "WatchCallback",
    "WatchHandle",
    "WatchMeta",
    "WriteResult",
    "__version__",
    "apply_ops",
]
