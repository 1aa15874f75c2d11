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

from typing import TypeAlias, TypedDict

__all__ = ["JsonValue", "WriteResult"]

JsonValue: TypeAlias = (
    bool | int | float | str | bytes | list["JsonValue"] | dict[str, "JsonValue"] | None
)


class WriteResult(TypedDict):
    """The RESULT of a successful write (``set``, ``patch``, ``set_in``,
    ``delete``, ``presence``): the key's version after it."""

    version: int
