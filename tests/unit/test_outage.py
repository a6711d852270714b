"""outage.wait_out: a step retried while the database is out of reach, within the caller's patience."""

from __future__ import annotations

import pytest

from scitt_oci import outage
from scitt_oci.errors import InboxUnavailable, StoreUnavailable


def test_a_step_is_run_again_until_the_database_is_back() -> None:
    told: list[int] = []
    tries = iter([InboxUnavailable("away"), InboxUnavailable("away"), None])

    def step() -> str:
        failure = next(tries)
        if failure is not None:
            raise failure
        return "done"

    assert outage.wait_out(step, patience=60, pause=0.001, waiting=lambda exc, n: told.append(n)) == "done"
    assert told == [1, 2]


def test_past_its_patience_the_error_is_raised_saying_for_how_long_and_others_at_once() -> None:
    def away() -> None:
        raise InboxUnavailable("the PostgreSQL inbox is out of reach")

    with pytest.raises(InboxUnavailable, match=r"^the PostgreSQL inbox is out of reach for over 0.01 s$"):
        outage.wait_out(away, patience=0.01, pause=0.004, max_pause=0.004)

    def broken() -> None:
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):  # not an outage: not waited out
        outage.wait_out(broken, patience=60, pause=0.001)
    assert issubclass(InboxUnavailable, StoreUnavailable)
