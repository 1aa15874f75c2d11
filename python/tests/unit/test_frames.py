from __future__ import annotations

import msgpack
import pytest

from sodp.errors import FrameError, ProtocolError
from sodp.frames import Frame, FrameType, decode_frame, encode_frame


def test_round_trip() -> None:
    body = {"state": "game.player", "value": {"b": b"\x01", "f": 1.5, "l": [None, True]}}
    data = encode_frame(FrameType.STATE_INIT, 10, 7, body)
    assert decode_frame(data) == Frame(3, 10, 7, body)


def test_compact_integers_and_nil_body() -> None:
    # fixarray(4), positive fixints, nil: the most compact encoding.
    assert encode_frame(FrameType.HEARTBEAT, 0, 1, None) == b"\x94\x09\x00\x01\xc0"


def test_bytes_stay_binary_and_str_stays_str() -> None:
    data = encode_frame(FrameType.CALL, 0, 1, {"s": "x", "b": b"x"})
    raw = msgpack.unpackb(data, raw=True)
    assert raw[3] == {b"s": b"x", b"b": b"x"}
    assert decode_frame(data).body == {"s": "x", "b": b"x"}


def test_unknown_type_survives_decoding() -> None:
    frame = decode_frame(msgpack.packb([0x42, 0, 0, None]))
    assert frame.type == 0x42
    assert frame.name() == "0x42"
    assert decode_frame(msgpack.packb([4, 0, 0, None])).name() == "DELTA"


@pytest.mark.parametrize(
    "data",
    [
        b"\xc1",  # never-used byte
        msgpack.packb({"a": 1}),
        msgpack.packb([1, 0, 0]),
        msgpack.packb([1, 0, 0, None, 5]),
        msgpack.packb(["x", 0, 0, None]),
        msgpack.packb([1, -1, 0, None]),
        msgpack.packb([1, 0, 0, [1]]),
        msgpack.packb([True, 0, 0, None]),
    ],
)
def test_malformed(data: bytes) -> None:
    with pytest.raises(FrameError):
        decode_frame(data)
    with pytest.raises(ProtocolError):
        decode_frame(data)
