"""`catalyst tail`: pretty-print and filter the daemon's log file (`logging.file`, text or JSON), optionally following it."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import IO, Iterator, NamedTuple

from catalyst.errors import UsageError

LEVEL_MARK = {"WARNING": "!", "ERROR": "E", "CRITICAL": "X"}
# A line of the text format (catalyst.logs.TEXT_FORMAT): "2026-11-23 10:00:01.123 INFO    router       | message".
TEXT_LINE = re.compile(r"^(?P<date>\d{4}-\d\d-\d\d) (?P<time>\d\d:\d\d:\d\d\.\d{3}) (?P<level>[A-Z]+) +(?P<actor>\S+) +\| (?P<msg>.*)$")
ISO_DATE = re.compile(r"^\d{4}-\d\d-\d\d$")


class Shown(NamedTuple):
    """One log line made readable: its actor (None for a line in neither format) and the text to print."""

    actor: str | None
    text: str


def parse(line: str) -> Shown:
    try:
        record = json.loads(line)
    except ValueError:
        return _parse_text(line.rstrip("\n"))
    if not isinstance(record, dict):
        return Shown(None, line.rstrip("\n"))
    who = str(record.get("actor", "-"))
    stamp = str(record.get("ts", ""))
    level = str(record.get("level", ""))
    extra = {k: v for k, v in record.items() if k not in ("ts", "level", "actor", "msg")}
    tail = ("  " + " ".join(f"{k}={v}" for k, v in extra.items())) if extra else ""
    # The day too: a daemon runs for days, and a line piped on to grep or a ticket must say which one it is.
    when = f"{stamp[:10]} {stamp[11:23]}" if ISO_DATE.match(stamp[:10]) else stamp[11:23]
    return Shown(who, f"{when} {LEVEL_MARK.get(level, ' ')} {who:<10} {record.get('msg', '')}{tail}")


def _parse_text(text: str) -> Shown:
    found = TEXT_LINE.match(text)
    if found is None:
        return Shown(None, text)
    return Shown(found["actor"],
                 f"{found['date']} {found['time']} {LEVEL_MARK.get(found['level'], ' ')} {found['actor']:<10} {found['msg']}")


def render(line: str, actor: str | None) -> str | None:
    """One readable line, or None when filtered out. A line in neither format passes through unless filtering."""
    shown = parse(line)
    return None if actor and shown.actor != actor else shown.text


def _lines(handle: IO[str], follow: bool, path: Path) -> Iterator[str | None]:
    """The log's lines; when following, None each time the end is reached (the caller may say something then)."""
    inode = os.fstat(handle.fileno()).st_ino
    while True:
        line = handle.readline()
        if line:
            yield line
            continue
        if not follow:
            return
        yield None
        time.sleep(0.25)
        try:
            if path.stat().st_ino != inode:  # rotated: continue in the new file
                handle.close()
                handle = path.open(encoding="utf-8", errors="replace")
                inode = os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            continue


def _no_line_of(actor: str, path: Path, seen: set[str], follow: bool) -> str:
    known = ", ".join(sorted(seen)[:12]) or "none"
    return (f"catalyst tail: no line of actor {actor!r} in {path}{' yet' if follow else ''} "
            f"(actors in it: {known}){'; following' if follow else ''}")


def tail(path: Path, actor: str | None, follow: bool, out: IO[str] = sys.stdout, err: IO[str] = sys.stderr) -> int:
    """0 when lines were shown; 1 when `--actor` matched none of the file (as grep), saying which actors it holds."""
    try:
        handle = path.open(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such log file (the daemon writes one where logging.file says, once it runs)") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the log: {exc.strerror}") from None
    matched = told = False
    seen: set[str] = set()
    try:
        for line in _lines(handle, follow, path):
            if line is None:  # the end of what is written so far: an --actor nothing matched is said once
                if actor and not matched and not told:
                    print(_no_line_of(actor, path, seen, follow=True), file=err, flush=True)
                    told = True
                continue
            shown = parse(line)
            if shown.actor is not None:
                seen.add(shown.actor)
            if actor and shown.actor != actor:
                continue
            matched = True
            print(shown.text, file=out, flush=follow)
    except KeyboardInterrupt:
        pass
    finally:
        handle.close()
    if actor and not matched and not follow:
        print(_no_line_of(actor, path, seen, follow=False), file=err)
        return 1
    return 0
