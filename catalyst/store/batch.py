"""Several Store calls in one transaction: what the DbWriter's group commit and the router's one-commit steps use."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class StoreCall:
    """One Store coroutine by name, with its arguments, to run inside a shared transaction."""

    method: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)


def call(method: str, /, *args: Any, **kwargs: Any) -> StoreCall:
    return StoreCall(method, args, kwargs)


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """A call's own result or its own exception: one failing call never takes the others' down."""

    value: Any = None
    error: BaseException | None = None

    def unwrap(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


def unwrap_all(outcomes: Iterable[CallOutcome]) -> list[Any]:
    """The values in order; raises the first call's exception (the others are committed all the same)."""
    return [outcome.unwrap() for outcome in outcomes]


class WriteGroup:
    """Calls collected while an actor decides one step, committed together; `then` callbacks run after the commit.

    Decide first, write once, announce after: log lines and messages to other actors follow the commit, so no
    one hears of a state that is not on disk.
    """

    def __init__(self) -> None:
        self.calls: list[StoreCall] = []
        self.urgent: list[Callable[[list[Any]], None]] = []
        self.after: list[Callable[[list[Any]], None]] = []

    def add(self, store_call: StoreCall) -> int:
        """Queue a call; returns the index of its value in the list the callbacks receive."""
        self.calls.append(store_call)
        return len(self.calls) - 1

    def then(self, callback: Callable[[list[Any]], None]) -> None:
        self.after.append(callback)

    def first(self, callback: Callable[[list[Any]], None]) -> None:
        """A callback that runs before every `then` callback of the groups committed with this one: a broker call
        waiting on this commit (a stop-loss) goes out before the log lines and messages of the others."""
        self.urgent.append(callback)

    def commit(self, writer: Any) -> list[Any]:
        """One `batch` through the DbWriter proxy (nothing if empty), then the callbacks in order.

        The first failed call's exception is raised after the commit, as a lone call's would be.
        """
        values = unwrap_all(writer.batch(self.calls).get()) if self.calls else []
        for callback in (*self.urgent, *self.after):
            callback(values)
        return values


def commit_together(groups: list[WriteGroup], writer: Any) -> list[BaseException | None]:
    """Several groups' calls in ONE `batch` (one commit), then each group's callbacks with its own values.

    Each group stands alone after the commit: one whose call failed (or whose callback raised) gets that error in
    the returned list, in order, and does not stop the others from being announced.
    """
    calls = [one for group in groups for one in group.calls]
    outcomes = writer.batch(calls).get() if calls else []
    errors: list[BaseException | None] = []
    settled: list[list[Any] | None] = []
    start = 0
    for group in groups:  # each group's outcome, and the urgent callbacks of those that committed
        mine, start = outcomes[start:start + len(group.calls)], start + len(group.calls)
        try:
            values = unwrap_all(mine)
            for callback in group.urgent:
                callback(values)
        except Exception as error:  # noqa: BLE001 - reported to the caller, per group
            errors.append(error)
            settled.append(None)
        else:
            errors.append(None)
            settled.append(values)
    for index, (group, values) in enumerate(zip(groups, settled)):
        if values is None:
            continue
        try:
            for callback in group.after:
                callback(values)
        except Exception as error:  # noqa: BLE001 - reported to the caller, per group
            errors[index] = error
    return errors
