"""Errors an operator sees: each carries the exit code the daemon ends with, so a supervisor can tell them apart."""

from __future__ import annotations


class CatalystError(Exception):
    """A failure with a one-line explanation for the operator; never shown as a traceback."""

    exit_code = 1


class ActorDied(CatalystError):
    """One of the daemon's actors died of an unexpected error (a bug): exit 1, so the supervisor restarts it."""


class UsageError(CatalystError):
    """Bad command-line arguments or config: the operator must change something before a restart helps."""

    exit_code = 2


class AccountCannotTrade(UsageError):
    """The broker account may not place orders (blocked, suspended, not active): a human must settle it with Alpaca
    before a restart helps, so it ends as a usage error does (exit 2, which the unit file does not restart)."""


class KeysRefused(UsageError):
    """The broker refused our API keys (wrong, revoked, or paper keys for live): a human must fix them before a restart
    helps, so it ends as a usage error does (exit 2, which the supervisor configs do not restart); exit 4 is left to a
    broker that does not answer, which a restart may outlast."""


class ConfigError(UsageError):
    """config.toml (or an environment override) is missing, unreadable or invalid."""


class DatabaseError(CatalystError):
    """The database cannot be opened, migrated or written."""

    exit_code = 3


class BrokerUnavailable(CatalystError):
    """The broker cannot be reached or refuses our keys."""

    exit_code = 4


class AlreadyRunning(CatalystError):
    """Another daemon holds the lock on this database."""

    exit_code = 5


class StopDuringStartup(KeyboardInterrupt):
    """SIGTERM or SIGINT before the daemon is up. Raised in the main thread wherever start-up is (a broker wait, a
    restore), like Ctrl-C, so what already started is stopped in reverse order; the stop was asked, so exit 0.
    A KeyboardInterrupt so no `except Exception` on the way swallows it."""
