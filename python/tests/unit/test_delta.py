"""Delta application: the shared vectors, plus the never-mutate and path-copy rules."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from sodp import DeltaError, apply_ops
from sodp.delta import escape_segment, parse_pointer

VECTORS = Path(__file__).resolve().parents[3] / "tests" / "vectors"


def _load(name: str) -> list[dict[str, Any]]:
    path = VECTORS / name
    if not path.exists():
        pytest.fail(f"shared test vectors missing: {path}")
    cases: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    return cases


def _ids(cases: list[dict[str, Any]]) -> list[str]:
    return [c["name"] for c in cases]


APPLY = _load("apply.json") if (VECTORS / "apply.json").exists() else []
DIFF = _load("diff.json") if (VECTORS / "diff.json").exists() else []


def test_vector_files_present() -> None:
    assert APPLY, f"no cases in {VECTORS / 'apply.json'}"
    assert DIFF, f"no cases in {VECTORS / 'diff.json'}"


@pytest.mark.parametrize("case", APPLY, ids=_ids(APPLY))
def test_apply_vector(case: dict[str, Any]) -> None:
    before = case["before"]
    snapshot = copy.deepcopy(before)
    ops_snapshot = copy.deepcopy(case["ops"])
    if case.get("error"):
        with pytest.raises(DeltaError):
            apply_ops(before, case["ops"])
    else:
        assert apply_ops(before, case["ops"]) == case["after"]
    assert before == snapshot, "apply_ops mutated its input"
    assert case["ops"] == ops_snapshot, "apply_ops mutated the ops"


@pytest.mark.parametrize("case", DIFF, ids=_ids(DIFF))
def test_diff_vector_applies(case: dict[str, Any]) -> None:
    old = case["old"]
    snapshot = copy.deepcopy(old)
    assert apply_ops(old, case["ops"]) == case["new"]
    assert old == snapshot


def test_unknown_op_is_a_value_error() -> None:
    # 0.2.2 raised ValueError; code catching that keeps working.
    with pytest.raises(ValueError, match="unknown delta op"):
        apply_ops({}, [{"op": "MOVE", "path": "/a"}])


def test_malformed_op() -> None:
    with pytest.raises(DeltaError):
        apply_ops({}, [{"path": "/a"}])
    with pytest.raises(DeltaError):
        apply_ops({}, [{"op": "ADD", "path": 3}])


def test_only_the_changed_path_is_copied() -> None:
    big = {f"k{i}": {"n": i} for i in range(100)}
    before = {"big": big, "other": {"x": [1, 2]}, "small": {"a": 1}}
    after = apply_ops(before, [{"op": "UPDATE", "path": "/small/a", "value": 2}])
    assert after == {"big": big, "other": {"x": [1, 2]}, "small": {"a": 2}}
    assert after is not before
    assert after["small"] is not before["small"]
    assert after["big"] is before["big"]  # shared, not copied
    assert after["other"] is before["other"]
    assert before["small"] == {"a": 1}


def test_batch_copies_each_container_once_and_keeps_inputs() -> None:
    before: dict[str, Any] = {"l": [1, 2], "m": {"a": {"b": 1}}}
    value = {"fresh": True}
    ops = [
        {"op": "ADD", "path": "/l/-", "value": 3},
        {"op": "ADD", "path": "/l/-", "value": 4},
        {"op": "ADD", "path": "/v", "value": value},
        {"op": "ADD", "path": "/v/more", "value": 1},  # must not mutate `value`
        {"op": "REMOVE", "path": "/m/a/b"},
    ]
    after = apply_ops(before, ops)
    assert after == {"l": [1, 2, 3, 4], "m": {"a": {}}, "v": {"fresh": True, "more": 1}}
    assert value == {"fresh": True}
    assert before == {"l": [1, 2], "m": {"a": {"b": 1}}}


def test_failed_batch_leaves_input_untouched() -> None:
    before = {"l": [1], "a": {"b": 1}}
    with pytest.raises(DeltaError):
        apply_ops(
            before,
            [
                {"op": "UPDATE", "path": "/a/b", "value": 2},
                {"op": "ADD", "path": "/l/9", "value": 1},
            ],
        )
    assert before == {"l": [1], "a": {"b": 1}}


def test_remove_never_creates_containers() -> None:
    assert apply_ops({"a": 1}, [{"op": "REMOVE", "path": "/x/y/z"}]) == {"a": 1}
    assert apply_ops(None, [{"op": "REMOVE", "path": "/x"}]) is None
    assert apply_ops({"l": []}, [{"op": "REMOVE", "path": "/l/-"}]) == {"l": []}
    assert apply_ops({"l": [1]}, [{"op": "REMOVE", "path": "/l/3/x"}]) == {"l": [1]}


def test_binary_values_are_kept() -> None:
    assert apply_ops({}, [{"op": "ADD", "path": "/blob", "value": b"\x00\xff"}]) == {
        "blob": b"\x00\xff"
    }


def test_pointer_helpers() -> None:
    assert parse_pointer("/") == []
    assert parse_pointer("") == []
    assert parse_pointer("/a~1b/~0/0") == ["a/b", "~", "0"]
    assert parse_pointer("/~01") == ["~1"]
    for key in ["a/b", "c~d", "~1", "plain"]:  # "/" is the root, so key "" is unreachable
        assert parse_pointer("/" + escape_segment(key)) == [key]
    with pytest.raises(DeltaError):
        parse_pointer("/a~")
