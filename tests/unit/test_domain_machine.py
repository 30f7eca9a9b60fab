"""The generic StateMachine: legality, named refusals, shortest paths, terminal states."""

from __future__ import annotations

from enum import StrEnum

import pytest

from catalyst.domain.errors import DomainError, IllegalTransition
from catalyst.domain.machine import StateMachine


class Door(StrEnum):
    OPEN = "open"
    CLOSED = "closed"
    LOCKED = "locked"
    BROKEN = "broken"
    BRICKED_UP = "bricked_up"


DOOR = StateMachine(
    "door",
    {
        Door.OPEN: frozenset({Door.CLOSED, Door.BROKEN}),
        Door.CLOSED: frozenset({Door.OPEN, Door.LOCKED}),
        Door.LOCKED: frozenset({Door.CLOSED, Door.BROKEN}),
        Door.BROKEN: frozenset(),
        Door.BRICKED_UP: frozenset(),
    },
)


def test_can_tells_legal_from_illegal_steps():
    assert DOOR.can(Door.OPEN, Door.CLOSED)
    assert not DOOR.can(Door.OPEN, Door.LOCKED)
    assert not DOOR.can(Door.BROKEN, Door.OPEN)


def test_check_returns_the_target_of_a_legal_step():
    assert DOOR.check(Door.CLOSED, Door.LOCKED) is Door.LOCKED


def test_check_refuses_an_illegal_step_with_a_readable_message():
    with pytest.raises(IllegalTransition) as refused:
        DOOR.check(Door.OPEN, Door.LOCKED, subject="front door")

    assert str(refused.value) == "illegal door transition front door: open -> locked"
    assert (refused.value.machine, refused.value.subject) == ("door", "front door")
    assert (refused.value.from_state, refused.value.to_state) == ("open", "locked")
    assert isinstance(refused.value, DomainError)


def test_path_is_the_shortest_legal_route_excluding_the_start():
    assert DOOR.path(Door.OPEN, Door.LOCKED) == (Door.CLOSED, Door.LOCKED)
    assert DOOR.path(Door.LOCKED, Door.OPEN) == (Door.CLOSED, Door.OPEN)
    # open -> broken directly beats open -> closed -> locked -> broken.
    assert DOOR.path(Door.OPEN, Door.BROKEN) == (Door.BROKEN,)


def test_path_to_the_same_state_is_empty():
    assert DOOR.path(Door.BROKEN, Door.BROKEN) == ()


def test_path_is_none_when_the_target_cannot_be_reached():
    assert DOOR.path(Door.BROKEN, Door.OPEN) is None
    assert DOOR.path(Door.OPEN, Door.BRICKED_UP) is None


def test_path_returns_the_machines_own_members_for_plain_strings():
    steps = DOOR.path("open", "locked")

    assert steps is not None and all(type(step) is Door for step in steps)


def test_terminal_states_are_those_without_a_way_out():
    assert DOOR.terminal == {Door.BROKEN, Door.BRICKED_UP}


def test_a_table_naming_a_state_without_its_own_row_is_refused():
    with pytest.raises(ValueError, match="without a row.*broken"):
        StateMachine("door", {Door.OPEN: frozenset({Door.BROKEN})})
