"""Reading a JWT's ``exp`` without verifying it.

The client never verifies tokens (the server does); it only needs to know when
one expires, to refresh it in-band before the server closes the session.
"""

from __future__ import annotations

import base64
import binascii
import json

__all__ = ["jwt_expiry", "refresh_delay"]


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim (seconds since the epoch), or ``None`` if absent/unreadable."""
    parts = token.split(".")
    if len(parts) < 2:
        return None
    payload = parts[1]
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        claims = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(claims, dict):
        return None
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        return None
    return float(exp)


def refresh_delay(exp: float, now: float) -> float:
    """Seconds from *now* until the token expiring at *exp* should be refreshed.

    A quarter of the remaining lifetime before expiry, at least 0.5 s and at most
    60 s early, so a one-hour token is refreshed a minute ahead (room for clock
    skew and a slow token provider) and a 2-second test token half a second ahead.
    """
    remaining = exp - now
    lead = min(60.0, max(0.5, remaining * 0.25))
    return max(0.0, remaining - lead)
