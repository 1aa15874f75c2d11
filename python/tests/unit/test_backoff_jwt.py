from __future__ import annotations

import base64
import json
import random

from sodp.backoff import Backoff
from sodp.jwt import jwt_expiry, refresh_delay


def test_backoff_doubles_to_the_cap_with_jitter() -> None:
    b = Backoff(1.0, 30.0, jitter=0.2, _rng=random.Random(1))
    delays = [b.next_delay() for _ in range(8)]
    for d, nominal in zip(delays, [1, 2, 4, 8, 16, 30, 30, 30], strict=True):
        assert nominal * 0.8 <= d <= min(30.0, nominal * 1.2)
    assert len({round(d, 6) for d in delays[5:]}) > 1  # jittered, not constant
    b.reset()
    assert 0.8 <= b.next_delay() <= 1.2


def test_backoff_without_jitter_is_exact() -> None:
    b = Backoff(0.5, 3.0, jitter=0.0)
    assert [b.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    b = Backoff(1.0, 30.0, jitter=0.0)
    for _ in range(200):  # no overflow after many attempts
        assert b.next_delay() <= 30.0


def _jwt(claims: object) -> str:
    def enc(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{enc({'alg': 'HS256', 'typ': 'JWT'})}.{enc(claims)}.sig"


def test_jwt_expiry() -> None:
    assert jwt_expiry(_jwt({"sub": "u", "exp": 1700000000})) == 1700000000.0
    assert jwt_expiry(_jwt({"sub": "u", "exp": 12.5})) == 12.5
    assert jwt_expiry(_jwt({"sub": "u"})) is None
    assert jwt_expiry(_jwt({"exp": True})) is None
    assert jwt_expiry(_jwt([1, 2])) is None
    assert jwt_expiry("not-a-jwt") is None
    assert jwt_expiry("a.!!!.c") is None
    assert jwt_expiry("") is None


def test_refresh_delay() -> None:
    assert refresh_delay(1000 + 3600, 1000) == 3600 - 60  # a minute early at most
    assert refresh_delay(1000 + 2, 1000) == 1.5  # half a second early at least
    assert refresh_delay(1000 + 8, 1000) == 6.0  # a quarter of what remains
    assert refresh_delay(999, 1000) == 0.0
