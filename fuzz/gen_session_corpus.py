#!/usr/bin/env python3
"""Writes the seeded corpus of the `session_frames` fuzz target
(fuzz/corpus/session_frames/). Each seed is a script of steps
`[tag, len, bytes...]` (see crates/sodp-server/src/fuzzing.rs). Run it
again after changing the format; `cargo test` runs every seed."""

import json
import os
import struct

OUT = os.path.join(os.path.dirname(__file__), "corpus", "session_frames")


def mp(v):  # a minimal MessagePack encoder, enough for the seeds
    if v is None:
        return b"\xc0"
    if v is True:
        return b"\xc3"
    if v is False:
        return b"\xc2"
    if isinstance(v, int):
        if 0 <= v < 128:
            return bytes([v])
        if v < 0 and v >= -32:
            return struct.pack("b", v)
        if 0 <= v < 2**64:
            return b"\xcf" + struct.pack(">Q", v)
        return b"\xd3" + struct.pack(">q", v)
    if isinstance(v, float):
        return b"\xcb" + struct.pack(">d", v)
    if isinstance(v, str):
        b = v.encode()
        if len(b) < 32:
            return bytes([0xA0 | len(b)]) + b
        return b"\xd9" + bytes([len(b)]) + b if len(b) < 256 else b"\xda" + struct.pack(">H", len(b)) + b
    if isinstance(v, bytes):
        return b"\xc4" + bytes([len(v)]) + v
    if isinstance(v, list):
        head = bytes([0x90 | len(v)]) if len(v) < 16 else b"\xdc" + struct.pack(">H", len(v))
        return head + b"".join(mp(x) for x in v)
    if isinstance(v, dict):
        head = bytes([0x80 | len(v)]) if len(v) < 16 else b"\xde" + struct.pack(">H", len(v))
        return head + b"".join(mp(k) + mp(x) for k, x in v.items())
    raise TypeError(v)


METHODS = ["state.set", "state.patch", "state.set_in", "state.delete", "state.presence"]


def step(tag, payload):
    payload = payload[:255]
    return bytes([tag, len(payload)]) + payload


def frame(kind, body, stream=1):
    return step(0, mp([kind, stream, 1, body]))


def call(method, args):
    return step(1, bytes([METHODS.index(method)]) + mp(args))


def auth(claims):
    return step(2, json.dumps(claims).encode())


def switch(n):
    return step(4, bytes([n]))


def end():
    return step(5, b"")


def tick(deadline=False):
    return step(3, bytes([1 if deadline else 0]))


SEEDS = {
    "auth-then-writes": [
        auth({"sub": "alice", "exp": 4102444800}),
        frame(0x02, {"state": "room"}),
        call("state.set", {"state": "room", "value": {"a": 1}}),
        call("state.presence", {"state": "room", "path": "alice", "value": {"x": 1}}),
        call("state.patch", {"state": "room", "patch": {"b": [1, 2, 3]}}),
        end(),
    ],
    "huge-exp": [auth({"sub": "a", "exp": 10**19}), call("state.set", {"state": "k", "value": 1})],
    "u64-max-exp": [auth({"sub": "a", "exp": 2**64 - 1}), tick(True)],
    "float-exp": [auth({"sub": "a", "exp": 1e300})],
    "negative-exp": [auth({"sub": "a", "exp": -5})],
    "nbf-future": [auth({"sub": "a", "exp": 4102444800, "nbf": 4102444000})],
    "sub-not-a-string": [auth({"sub": 5, "exp": 4102444800})],
    "refresh-other-sub": [
        auth({"sub": "a", "exp": 4102444800}),
        auth({"sub": "b", "exp": 4102444800}),
    ],
    "calls-before-auth": [call("state.set", {"state": "k", "value": 1}), frame(0x02, {"state": "k"})],
    "two-sessions-presence": [
        auth({"sub": "a", "exp": 4102444800}),
        call("state.presence", {"state": "room", "path": "me", "value": 1}),
        switch(1),
        auth({"sub": "b", "exp": 4102444800}),
        call("state.presence", {"state": "room", "path": "me", "value": 2}),
        frame(0x02, {"states": ["room", "other"]}),
        switch(0),
        end(),
        switch(1),
        call("state.delete", {"state": "room"}),
    ],
    "resume-and-unwatch": [
        auth({"sub": "a", "exp": 4102444800}),
        call("state.set", {"state": "k", "value": 1}),
        call("state.set", {"state": "k", "value": 2}),
        frame(0x0A, {"state": "k", "since_version": 0}),
        frame(0x0D, {"state": "k"}),
        frame(0x0D, {"states": []}),
    ],
    "oversize-and-deep": [
        auth({"sub": "a", "exp": 4102444800}),
        call("state.set", {"state": "big", "value": "x" * 200}),
        call("state.set_in", {"state": "deep", "path": "/a" * 20, "value": 1}),
        call("state.set_in", {"state": "bad", "path": "/a/7", "value": 1}),
        call("state.delete", {"state": "never"}),
    ],
    "bad-frames": [
        step(0, b"\x94\x05"),
        step(0, b"\x93\x01\x00\x00"),
        step(0, b"\xdd\xff\xff\xff\xff"),
        step(0, b"\x94\xff\x00\x00\xc0"),
        frame(0x01, {"x": 1}),
        tick(),
        tick(True),
    ],
    "heartbeats": [auth({"sub": "a", "exp": 4102444800}), frame(0x09, None), tick(), frame(0x09, None), tick(), tick()],
    "presence-limit": [auth({"sub": "a", "exp": 4102444800})]
    + [call("state.presence", {"state": "r", "path": f"u{i}", "value": i}) for i in range(12)]
    + [end()],
    "structured-claims": [step(2, bytes(range(40)))],
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, steps in SEEDS.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(b"".join(steps))
    print(f"wrote {len(SEEDS)} seeds to {OUT}")


if __name__ == "__main__":
    main()
