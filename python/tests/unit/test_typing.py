"""The public signatures, as a user's ``mypy --strict`` sees them."""

from __future__ import annotations

import textwrap
import typing
from pathlib import Path

import pytest
from mypy import api as mypy_api

from sodp import Source, WatchMeta

GOOD = """
    from typing import Any, assert_type
    import sodp

    async def main(client: sodp.SodpClient) -> None:
        result = await client.set("k", {"n": 1})
        assert_type(result["version"], int)
        values: dict[str, int] = {"n": 1}
        await client.set("k", values)  # a narrower dict is accepted
        value: sodp.JsonValue = client.get("k")
        data: sodp.JsonValue = await client.call("state.set", {"state": "k", "value": 1})

        def on(value: dict[str, Any] | None, meta: sodp.WatchMeta) -> None:
            source: sodp.Source = meta.source
            if meta.source == "delta":
                print(value, source, data)

        client.watch("k", on)
"""

BAD = """
    import sodp

    def on(value: object, meta: sodp.WatchMeta) -> None:
        if meta.source == "cached":  # no such source
            pass

    async def main(client: sodp.SodpClient) -> None:
        result = await client.set("k", 1)
        result["versoin"]
        client.get("k") + 1
"""


def run_mypy(tmp_path: Path, code: str) -> tuple[str, int]:
    src = tmp_path / "user_code.py"
    src.write_text(textwrap.dedent(code))
    out, err, status = mypy_api.run(
        ["--strict", "--no-incremental", "--cache-dir", str(tmp_path / ".mypy"), str(src)]
    )
    return out + err, status


def test_source_is_the_literal_of_its_three_values() -> None:
    assert typing.get_args(Source) == ("cache", "init", "delta")
    hints = typing.get_type_hints(WatchMeta)
    assert hints["source"] == Source


@pytest.mark.parametrize(("code", "clean"), [(GOOD, True), (BAD, False)], ids=["good", "bad"])
def test_user_code_type_checks(tmp_path: Path, code: str, clean: bool) -> None:
    out, status = run_mypy(tmp_path, code)
    if clean:
        assert status == 0, out
    else:
        assert status == 1, out
        assert "Non-overlapping equality check" in out, out
        assert '"versoin"' in out, out
        assert 'Unsupported operand types for + ("None" and "int")' in out, out


EXTENSIONS = """
    from typing import assert_type
    import sodp

    async def main(client: sodp.SodpClient) -> None:
        got = await client.fetch("k")
        assert_type(got["version"], int)
        assert_type(got["initialized"], bool)
        assert_type(got["value"], sodp.JsonValue)
        page = await client.keys("a", limit=10, after="a.b")
        assert_type(page["keys"], list[str])
        assert_type(page.get("next"), str | None)
        hist = await client.history("k", since_version=3, limit=5)
        assert_type(hist["entries"][0]["version"], int)
        assert_type(hist["complete"], bool)
        await client.set("k", 1, if_version=0, ttl=1000)
        await client.delete("k", if_version=4)

        def bump(v: sodp.JsonValue) -> int:
            return (v if isinstance(v, int) else 0) + 1

        async def abump(v: sodp.JsonValue) -> int:
            return 1

        res = await client.transact("k", bump)
        assert_type(res.value, int)
        assert_type(res.attempts, int)
        res2 = await client.transact("k", abump)
        assert_type(res2.value, int)
        done = await client.transaction().set("a", 1).patch("b", {"x": 1}, if_version=2).commit()
        assert_type(done["version"], int)
        try:
            pass
        except sodp.ConflictError as e:
            assert_type(e.version, int)
            assert_type(e.op, int | None)
        except sodp.UnsupportedError as u:
            assert_type(u.capability, str)
"""


def test_extension_signatures_type_check(tmp_path: Path) -> None:
    out, status = run_mypy(tmp_path, EXTENSIONS)
    assert status == 0, out
