"""CATALYST_EXIT_WITH_PARENT=<pid>: a process a harness started is asked to stop (SIGTERM) when that harness dies.

For test runs, the chaos harness and the benchmarks, not for operators (a supervisor stops what it runs). Their
daemons and exchanges run in sessions of their own (so a kill reaches the right process), and a harness killed from
outside (a timeout's SIGKILL, whose `finally` never runs) used to leave them running, holding ports and CPU, for the
rest of a CI run. Linux's parent-death signal delivers the stop the harness can no longer send; the daemon then stops
as on any TERM (entries withdrawn, every filled share left under its stop).

Linux ties the signal to the THREAD that started the child: harnesses start these processes from their main thread.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

ENV = "CATALYST_EXIT_WITH_PARENT"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def follow_parent_from_environment() -> str | None:
    """Arm the parent-death signal when the environment asks for it; a word on what was done, or None."""
    wanted = os.environ.get(ENV, "").strip()
    if not wanted:
        return None
    if not wanted.isdigit():
        return f"{ENV}={wanted!r} is not a process id: ignored"
    if not sys.platform.startswith("linux"):
        return f"{ENV}: not on Linux ({sys.platform}): ignored"
    harness = int(wanted)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        return f"{ENV}: prctl refused ({os.strerror(ctypes.get_errno())}): ignored"
    if os.getppid() == harness:
        return None
    libc.prctl(_PR_SET_PDEATHSIG, 0, 0, 0, 0)  # not ours to follow: whoever started us is not that harness
    if _gone(harness):  # the harness died before the signal was armed: it will never come
        os.kill(os.getpid(), signal.SIGTERM)
        return None
    # Inherited through a process in between (a supervisord a test started): that one stops its children itself.
    return f"{ENV}={harness} names a process that is not this one's parent: ignored"


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def tied(env: dict[str, str]) -> dict[str, str]:
    """`env` for a child this process starts (from its main thread) and that must not outlive it."""
    return {**env, ENV: str(os.getpid())}
