from __future__ import annotations

import sodp
from sodp import errors


def test_tree_matches_the_docstring() -> None:
    doc = errors.__doc__ or ""
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, sodp.SodpError)
        assert name in doc
        assert getattr(sodp, name) is cls  # all public at the top level too


def test_standard_bases_for_0_2_x_code() -> None:
    assert issubclass(sodp.CallError, RuntimeError)
    assert issubclass(sodp.CallTimeout, TimeoutError)
    assert issubclass(sodp.ConnectionLost, ConnectionError)
    assert issubclass(sodp.DeltaError, ValueError)
    assert issubclass(sodp.FrameError, sodp.ProtocolError)


def test_attributes() -> None:
    e = sodp.CallError(404, "unknown method", "state.nope")
    assert (e.code, e.message, e.method) == (404, "unknown method", "state.nope")
    assert "404" in str(e) and "state.nope" in str(e)
    s = sodp.ServerError(403, "denied", 12, "secret.key")
    assert (s.code, s.stream_id, s.key) == (403, 12, "secret.key")
    a = sodp.AuthError("expired")
    assert a.code == 401


def test_public_names() -> None:
    for name in sodp.__all__:
        assert hasattr(sodp, name), name
    meta = sodp.WatchMeta(3, True)
    assert meta.source == "delta"  # 0.2.2's default
