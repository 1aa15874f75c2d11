"""Delta application: ``apply_ops(value, ops) -> new value``.

An op is ``{"op": "ADD" | "UPDATE" | "REMOVE", "path": <JSON Pointer>, "value"?}``.
Paths are RFC 6901 pointers (``~1`` is ``/``, ``~0`` is ``~``); the root is
written ``"/"`` (``""`` is accepted too).

Rules (the wire contract's, in one place):

* Root: ``ADD``/``UPDATE "/"`` replace the value; ``REMOVE "/"`` gives ``None``.
* Objects: ``ADD``/``UPDATE`` set the member; ``REMOVE`` deletes it (a missing
  member is not an error).
* Arrays: ``-`` is past-the-end: ``ADD``/``UPDATE`` append, ``REMOVE`` drops the
  last element. ``N``: ``ADD``/``UPDATE`` replace element N, or append when
  N == len; ``REMOVE`` splices it out. Any other index raises.
* A ``None``/scalar where a container is needed (the root or an intermediate)
  becomes an array when the next segment is ``-`` or all digits, else an object.
  ``REMOVE`` never creates containers: removing below a missing path is a no-op.
* An unknown ``op`` raises :class:`~sodp.errors.DeltaError` (also a
  ``ValueError``): ignoring it would let the cache drift from the server.

Cost: *path copying*. Only the containers on the path of an op are copied
(shallow), everything else is shared with the previous value, so a delta to a
10,000-entry map costs one shallow copy of that map, not a deep copy of
everything under it. The previous value is never mutated — callers may hold it —
and neither are the values inside ``ops``. Treat values you receive as
read-only: the new value shares unchanged subtrees with the old one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import DeltaError
from .values import JsonValue

__all__ = ["apply_ops", "escape_segment", "parse_pointer"]

_BAD_ESCAPE = re.compile(r"~(?![01])")
_ADD = "ADD"
_UPDATE = "UPDATE"
_REMOVE = "REMOVE"


def escape_segment(segment: str) -> str:
    """One key as a pointer segment: ``a/b`` -> ``a~1b``, ``a~b`` -> ``a~0b``."""
    return segment.replace("~", "~0").replace("/", "~1")


def parse_pointer(path: str) -> list[str]:
    """``"/"`` or ``""`` -> ``[]``; ``"/a~1b/0"`` -> ``["a/b", "0"]``."""
    if path == "/" or path == "":
        return []
    if path[0] != "/":
        raise DeltaError(f"path must start with '/': {path!r}")
    parts = path[1:].split("/")
    if "~" in path:
        if _BAD_ESCAPE.search(path):
            raise DeltaError(f"bad escape in path {path!r}: '~' must be followed by 0 or 1")
        # ~1 first, then ~0, so that "~01" decodes to "~1" and not "/".
        parts = [p.replace("~1", "/").replace("~0", "~") for p in parts]
    return parts


def apply_ops(value: JsonValue, ops: Iterable[Mapping[str, Any]]) -> JsonValue:
    """Return the value after applying *ops* in order; *value* is left untouched.

    Raises :class:`~sodp.errors.DeltaError` for an unknown op or an impossible
    path; *value* is unchanged in that case too.
    """
    # Containers created during this call, by id: those may be mutated in place
    # by later ops of the same batch. Holding the objects keeps their ids unique.
    owned: dict[int, Any] = {}
    for op in ops:
        value = _apply_one(value, op, owned)
    return value


def _new_container(segment: str) -> list[Any] | dict[str, Any]:
    if segment == "-" or segment.isdigit():
        return []
    return {}


def _own(node: Any, segment: str, owned: dict[int, Any]) -> Any:
    """A container we may mutate standing for *node*, copying it if needed."""
    if id(node) in owned:
        return node
    node = node.copy() if isinstance(node, (dict, list)) else _new_container(segment)
    owned[id(node)] = node
    return node


def _index(segment: str, length: int, path: str) -> int:
    """Array index for *segment*; ``-`` and ``length`` both mean past-the-end."""
    if segment == "-":
        return length
    if segment.isdigit() and (segment == "0" or segment[0] != "0"):
        idx = int(segment)
        if idx <= length:
            return idx
        raise DeltaError(f"array index {idx} out of range (length {length}) in {path!r}")
    raise DeltaError(f"bad array index {segment!r} in {path!r}")


def _apply_one(root: Any, op: Mapping[str, Any], owned: dict[int, Any]) -> Any:
    try:
        kind = op["op"]
        path = op["path"]
    except (KeyError, TypeError) as exc:
        raise DeltaError(f"malformed delta op: {op!r}") from exc
    if kind != _ADD and kind != _UPDATE and kind != _REMOVE:
        raise DeltaError(f"unknown delta op {kind!r}; expected ADD, UPDATE or REMOVE")
    if not isinstance(path, str):
        raise DeltaError(f"delta path must be a string, got {path!r}")
    parts = parse_pointer(path)
    removing = kind == _REMOVE
    if not parts:
        return None if removing else op.get("value")
    if removing and not isinstance(root, (dict, list)):
        return root

    new_root = node = _own(root, parts[0], owned)
    last = len(parts) - 1
    for i in range(last):
        seg = parts[i]
        nxt = parts[i + 1]
        if isinstance(node, dict):
            child = node.get(seg)
            if removing and not isinstance(child, (dict, list)):
                return new_root
            mine = _own(child, nxt, owned)
            if mine is not child:
                node[seg] = mine
        else:
            if removing and not (seg.isdigit() and int(seg) < len(node)):
                return new_root  # nothing there to remove
            idx = _index(seg, len(node), path)
            if idx == len(node):
                mine = _own(None, nxt, owned)
                node.append(mine)
            else:
                child = node[idx]
                if removing and not isinstance(child, (dict, list)):
                    return new_root
                mine = _own(child, nxt, owned)
                if mine is not child:
                    node[idx] = mine
        node = mine

    seg = parts[last]
    if isinstance(node, dict):
        if removing:
            node.pop(seg, None)
        else:
            node[seg] = op.get("value")
        return new_root

    if removing:
        if seg == "-":
            if node:
                node.pop()
        elif seg.isdigit() and int(seg) < len(node):
            del node[int(seg)]
        elif not seg.isdigit():
            raise DeltaError(f"bad array index {seg!r} in {path!r}")
        return new_root  # out of range: nothing to remove
    idx = _index(seg, len(node), path)
    if idx == len(node):
        node.append(op.get("value"))
    else:
        node[idx] = op.get("value")
    return new_root
