"""`catalyst tail` formatting: JSON lines become one readable line; filtering by actor; rotation is followed."""

from __future__ import annotations

import io
import json

from catalyst.tail import render, tail


def line(actor: str, msg: str, **extra) -> str:
    return json.dumps({"ts": "2026-11-23T10:00:01.123-05:00", "level": "INFO", "actor": actor, "msg": msg, **extra})


def test_a_json_line_becomes_time_actor_and_message():
    assert render(line("router", "order AAPL#o-1 created → submitted", order="o-1"), None) == \
        "10:00:01.123   router     order AAPL#o-1 created → submitted  order=o-1"


def test_filtering_by_actor_drops_other_actors_and_plain_text():
    assert render(line("router", "x"), "position") is None
    assert render("not json at all\n", "position") is None
    assert render("not json at all\n", None) == "not json at all"


def test_tail_prints_only_the_chosen_actor(tmp_path):
    log = tmp_path / "catalyst.log"
    log.write_text("\n".join([line("router", "a"), line("position", "b"), line("position", "c")]) + "\n")
    out = io.StringIO()
    assert tail(log, "position", follow=False, out=out) == 0
    assert [l.split()[-1] for l in out.getvalue().splitlines()] == ["b", "c"]


def test_a_text_format_line_is_rendered_and_filtered_like_a_json_one(tmp_path):
    """The default `logging.format = "text"` file: the same layout, and `--actor` keeps working on it."""
    from loguru import logger

    from catalyst.logs import setup_logging

    log = tmp_path / "catalyst.log"
    setup_logging(fmt="text", file=log)  # the daemon's own text lines, not a hand-written imitation
    logger.bind(actor="router").info("order AAPL#o-1 created → submitted")
    logger.bind(actor="doctor").warning("doctor ORPHAN_ORDER order AAPL#b-1 → alert")
    logger.remove()
    out = io.StringIO()
    assert tail(log, "doctor", follow=False, out=out) == 0
    (shown,) = out.getvalue().splitlines()
    assert shown.endswith(" ! doctor     doctor ORPHAN_ORDER order AAPL#b-1 → alert") and shown[2] == ":"
    out = io.StringIO()
    assert tail(log, None, follow=False, out=out) == 0
    assert [l.split(None, 2)[1:] for l in out.getvalue().splitlines()][0] == ["router", "order AAPL#o-1 created → submitted"]
