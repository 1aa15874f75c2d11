"""The README's extension examples, run as written against the real server."""

from __future__ import annotations

import re
import textwrap
from typing import Any

import pytest

from sodp import SodpClient

from ..support import PYTHON_DIR, ServerProcess, wait_for

pytestmark = pytest.mark.integration


def extension_examples() -> list[str]:
    text = (PYTHON_DIR / "README.md").read_text()
    start = text.index("## Extensions")
    end = text.index("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.S)


def test_every_extension_has_an_example() -> None:
    assert len(extension_examples()) == 7


async def test_readme_extension_examples_run(
    sodp_server: ServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    body = "".join(extension_examples())
    source = "async def example(client):\n" + textwrap.indent(body, "    ")
    scope: dict[str, Any] = {}
    exec(compile(source, "README.md", "exec"), scope)
    async with SodpClient(sodp_server.url) as client:
        await scope["example"](client)
        await wait_for(lambda: client.get("game.players.*") == {"game.players.alice": {"hp": 9}})
        assert (await client.fetch("likes"))["value"] == 1
        assert (await client.fetch("bank.bob"))["value"] == {"balance": 110}
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("stale; current version is ")
    assert out[1] == "5 True True"
    assert "complete: True" in out
    assert "both at version" in out[-2]
    assert out[-1] == "True"
