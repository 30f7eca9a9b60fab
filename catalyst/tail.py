"""`catalyst tail`: pretty-print and filter the daemon's log file (`logging.file`, text or JSON), optionally following it."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import IO, Iterator

from catalyst.errors import UsageError

LEVEL_MARK = {"WARNING": "!", "ERROR": "E", "CRITICAL": "X"}
# A line of the text format (catalyst.logs.TEXT_FORMAT): "2026-11-23 10:00:01.123 INFO    router       | message".
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d (?P<time>\d\d:\d\d:\d\d\.\d{3}) (?P<level>[A-Z]+) +(?P<actor>\S+) +\| (?P<msg>.*)$")


def render(line: str, actor: str | None) -> str | None:
    """One readable line, or None when filtered out. A line in neither format passes through unless filtering."""
    try:
        record = json.loads(line)
    except ValueError:
        return _render_text(line.rstrip("\n"), actor)
    if not isinstance(record, dict):
        return None if actor else line.rstrip("\n")
    who = str(record.get("actor", "-"))
    if actor and who != actor:
        return None
    ts = str(record.get("ts", ""))[11:23]
    level = str(record.get("level", ""))
    extra = {k: v for k, v in record.items() if k not in ("ts", "level", "actor", "msg")}
    tail = ("  " + " ".join(f"{k}={v}" for k, v in extra.items())) if extra else ""
    return f"{ts} {LEVEL_MARK.get(level, ' ')} {who:<10} {record.get('msg', '')}{tail}"


def _render_text(text: str, actor: str | None) -> str | None:
    found = TEXT_LINE.match(text)
    if found is None:
        return None if actor else text
    if actor and found["actor"] != actor:
        return None
    return f"{found['time']} {LEVEL_MARK.get(found['level'], ' ')} {found['actor']:<10} {found['msg']}"


def _lines(handle: IO[str], follow: bool, path: Path) -> Iterator[str]:
    inode = os.fstat(handle.fileno()).st_ino
    while True:
        line = handle.readline()
        if line:
            yield line
            continue
        if not follow:
            return
        time.sleep(0.25)
        try:
            if path.stat().st_ino != inode:  # rotated: continue in the new file
                handle.close()
                handle = path.open(encoding="utf-8", errors="replace")
                inode = os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            continue


def tail(path: Path, actor: str | None, follow: bool, out: IO[str] = sys.stdout) -> int:
    try:
        handle = path.open(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such log file (the daemon writes one where logging.file says, once it runs)") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the log: {exc.strerror}") from None
    try:
        for line in _lines(handle, follow, path):
            text = render(line, actor)
            if text is not None:
                print(text, file=out, flush=follow)
    except KeyboardInterrupt:
        pass
    finally:
        handle.close()
    return 0
