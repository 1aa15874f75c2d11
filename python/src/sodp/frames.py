"""Frames: bytes <-> ``[type, stream_id, seq, body]``, nothing else.

A frame is one binary WebSocket message holding a MessagePack array of exactly
four elements. This module knows the frame types and checks the shape of a
frame; what a body means is the protocol state machine's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import msgpack

from .errors import FrameError

__all__ = ["Frame", "FrameType", "decode_frame", "encode_frame"]


class FrameType(IntEnum):
    HELLO = 0x01
    WATCH = 0x02
    STATE_INIT = 0x03
    DELTA = 0x04
    CALL = 0x05
    RESULT = 0x06
    ERROR = 0x07
    HEARTBEAT = 0x09
    RESUME = 0x0A
    AUTH = 0x0B
    AUTH_OK = 0x0C
    UNWATCH = 0x0D


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame. ``type`` stays an ``int`` so unknown types survive decoding."""

    type: int
    stream_id: int
    seq: int
    body: Any

    def name(self) -> str:
        try:
            return FrameType(self.type).name
        except ValueError:
            return f"0x{self.type:02X}"


def encode_frame(ftype: int, stream_id: int, seq: int, body: Any) -> bytes:
    """Pack a frame. ``use_bin_type`` keeps ``bytes`` as msgpack bin, ``str`` as str."""
    data: bytes = msgpack.packb([int(ftype), stream_id, seq, body], use_bin_type=True)
    return data


def decode_frame(data: bytes) -> Frame:
    """Unpack and check one frame; raise :class:`FrameError` if it is not one."""
    try:
        obj = msgpack.unpackb(data, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise FrameError(f"not MessagePack: {exc}") from exc
    if not isinstance(obj, list) or len(obj) != 4:
        raise FrameError(f"frame must be a 4-element array, got {type(obj).__name__}")
    ftype, stream_id, seq, body = obj
    for name, val in (("type", ftype), ("stream_id", stream_id), ("seq", seq)):
        if not isinstance(val, int) or isinstance(val, bool) or val < 0:
            raise FrameError(f"frame {name} must be a non-negative integer, got {val!r}")
    if body is not None and not isinstance(body, dict):
        raise FrameError(f"frame body must be a map or nil, got {type(body).__name__}")
    return Frame(ftype, stream_id, seq, body)
