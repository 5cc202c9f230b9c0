"""Text the log can store: results, errors and messages from a task's code have each NUL
and lone surrogate replaced by U+FFFD; submissions holding one are refused instead."""

from __future__ import annotations

from execution_ledger.domain.execution import Failure, Success
from execution_ledger.domain.storable import is_storable, storable, storable_text

R = "\ufffd"


def test_nul_and_lone_surrogates_become_the_replacement_character() -> None:
    assert storable_text("a\x00b\ud800c\udfffd") == f"a{R}b{R}c{R}d"
    assert storable_text("fine: é, 😀, \u2603") == "fine: é, 😀, \u2603"


def test_every_string_of_a_value_is_made_storable_keys_included() -> None:
    value = {"k\x00": ["x\ud800", ("y", 1, None, 2.5)], "n": {"deep": "\x00"}}
    assert storable(value) == {f"k{R}": [f"x{R}", ("y", 1, None, 2.5)], "n": {"deep": R}}


def test_a_value_already_storable_is_returned_as_it_is_not_copied() -> None:
    value = {"a": [1, "b", {"c": None}], "d": ("e",)}
    assert storable(value) is value


def test_an_outcome_from_a_tasks_code_is_made_storable_as_it_is_built() -> None:
    success = Success({"out": "a\x00"}, {"stderr": "\udc80"})
    assert (success.result, success.details) == ({"out": f"a{R}"}, {"stderr": R})
    failure = Failure("Bad\x00Class", "no\x00pe \ud800", details={"tb": "\x00"})
    assert (failure.error_class, failure.message, failure.details) == (
        f"Bad{R}Class",
        f"no{R}pe {R}",
        {"tb": R},
    )


def test_storable_tells_text_with_a_nul_its_escape_or_a_lone_surrogate() -> None:
    assert is_storable("plain é 😀")
    assert not is_storable("a\x00")
    assert not is_storable('{"a": "\\u0000"}')  # a NUL as JSON text writes it
    assert not is_storable("\ud800")


def test_a_named_tuple_keeps_its_type() -> None:
    from typing import NamedTuple

    class Row(NamedTuple):
        name: str
        n: int

    assert storable([Row("a\x00", 1)]) == [Row(f"a{R}", 1)]
    assert type(storable(Row("\x00", 2))) is Row


def test_a_number_jsonb_cannot_hold_becomes_its_name_as_text() -> None:
    value = {"nan": float("nan"), "up": float("inf"), "down": [float("-inf")], "ok": 2.5}
    assert storable(value) == {"nan": "NaN", "up": "Infinity", "down": ["-Infinity"], "ok": 2.5}
    assert Success({"body": {"v": float("nan")}}).result == {"body": {"v": "NaN"}}
