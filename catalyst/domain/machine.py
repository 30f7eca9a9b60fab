"""One generic state machine over a literal transition table; every domain machine is an instance."""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Mapping
from typing import Generic, TypeVar

from catalyst.domain.errors import IllegalTransition

S = TypeVar("S", bound=Hashable)


class StateMachine(Generic[S]):
    """A named machine: `table[a]` is the frozenset of states `a` may move to directly."""

    def __init__(self, name: str, table: Mapping[S, frozenset[S]]) -> None:
        unknown = {target for targets in table.values() for target in targets} - set(table)
        if unknown:
            # A target with no row of its own would be a state the machine cannot reason about.
            raise ValueError(f"{name} table names states without a row: {sorted(map(str, unknown))}")
        self.name = name
        self.table: Mapping[S, frozenset[S]] = dict(table)
        # Declaration order, so `path` breaks ties the same way in every process (hash order of str
        # enums changes with PYTHONHASHSEED).
        self._order = {state: index for index, state in enumerate(self.table)}

    @property
    def states(self) -> tuple[S, ...]:
        """Every state, in the table's declaration order."""
        return tuple(self.table)

    @property
    def terminal(self) -> frozenset[S]:
        """States with no way out."""
        return frozenset(state for state, targets in self.table.items() if not targets)

    def can(self, from_state: S, to_state: S) -> bool:
        """True when `from_state -> to_state` is one legal step."""
        return to_state in self.table.get(from_state, frozenset())

    def check(self, from_state: S, to_state: S, subject: object = None) -> S:
        """Return `to_state` when the step is legal, else raise IllegalTransition naming `subject`."""
        if not self.can(from_state, to_state):
            raise IllegalTransition(self.name, subject, str(from_state), str(to_state))
        return to_state

    def path(self, from_state: S, to_state: S) -> tuple[S, ...] | None:
        """Shortest legal path (BFS) after `from_state` up to and including `to_state`.

        Empty when the two are equal; None when `to_state` cannot be reached.
        """
        if from_state == to_state:
            return ()
        if from_state not in self.table or to_state not in self.table:
            return None
        came_from: dict[S, S] = {}
        queue: deque[S] = deque([from_state])
        seen = {from_state}
        while queue:
            state = queue.popleft()
            for target in sorted(self.table[state], key=self._order.__getitem__):
                if target in seen:
                    continue
                seen.add(target)
                came_from[target] = state
                if target == to_state:
                    # `target` is the table's own member, even when the caller passed a plain str.
                    return self._walk_back(came_from, from_state, target)
                queue.append(target)
        return None

    @staticmethod
    def _walk_back(came_from: dict[S, S], start: S, end: S) -> tuple[S, ...]:
        steps = [end]
        while steps[-1] in came_from and came_from[steps[-1]] != start:
            steps.append(came_from[steps[-1]])
        return tuple(reversed(steps))

    def __repr__(self) -> str:
        return f"StateMachine({self.name!r}, {len(self.table)} states)"
