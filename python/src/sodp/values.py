"""The types of what the server sends back.

:data:`JsonValue` is a decoded state value: what ``watch`` callbacks receive,
``get()`` returns and ``call()`` resolves to. The server stores MessagePack,
so besides the JSON types a value may hold ``bytes`` (MessagePack bin, kept as
it was written); map keys are always strings.

What the client *accepts* (``set(value)``, ``call(method, args)``, ...) stays
``Any`` on purpose: anything ``msgpack`` can pack is sent as is (tuples,
bytes, ...), and a recursive union would reject ordinary arguments such as a
``dict[str, int]`` variable, because ``dict`` and ``list`` are invariant.
"""

from __future__ import annotations

from typing import NotRequired, TypeAlias, TypedDict

__all__ = [
    "FetchResult",
    "HistoryEntry",
    "HistoryPage",
    "JsonValue",
    "KeysPage",
    "WriteResult",
]

JsonValue: TypeAlias = (
    bool | int | float | str | bytes | list["JsonValue"] | dict[str, "JsonValue"] | None
)


class WriteResult(TypedDict):
    """The RESULT of a successful write (``set``, ``patch``, ``set_in``,
    ``delete``, ``presence``): the key's version after it."""

    version: int


class FetchResult(TypedDict):
    """What :meth:`~sodp.SodpClient.fetch` returns (``state.get``): the key's
    value and version now. A key that holds no value (never written, or
    deleted) has ``initialized: False`` and ``value: None``."""

    version: int
    value: JsonValue
    initialized: bool


class KeysPage(TypedDict):
    """One page of :meth:`~sodp.SodpClient.keys` (``state.keys``): keys in byte
    order. ``next`` is present only when more keys may follow; pass it back
    as ``after=`` for the next page."""

    keys: list[str]
    next: NotRequired[str]


class HistoryEntry(TypedDict):
    """One retained change of a key: its version and the DELTA ops."""

    version: int
    ops: list[dict[str, JsonValue]]


class HistoryPage(TypedDict):
    """What :meth:`~sodp.SodpClient.history` returns (``state.history``),
    oldest first. ``complete: False``: some change after ``since_version``
    is no longer retained."""

    entries: list[HistoryEntry]
    complete: bool
