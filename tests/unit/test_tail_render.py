"""`catalyst tail` formatting: JSON lines become one readable line; filtering by actor; rotation is followed."""

from __future__ import annotations

import io
import json

from catalyst.tail import render, tail


def line(actor: str, msg: str, **extra) -> str:
    return json.dumps({"ts": "2026-11-23T10:00:01.123-05:00", "level": "INFO", "actor": actor, "msg": msg, **extra})


def test_a_json_line_becomes_time_actor_and_message():
    assert render(line("router", "order AAPL#o-1 created → submitted", order="o-1"), None) == \
        "2026-11-23 10:00:01.123   router     order AAPL#o-1 created → submitted  order=o-1"


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
    assert shown.endswith(" ! doctor     doctor ORPHAN_ORDER order AAPL#b-1 → alert") and shown[4] == "-" and shown[13] == ":"
    out = io.StringIO()
    assert tail(log, None, follow=False, out=out) == 0
    assert [l.split(None, 3)[2:] for l in out.getvalue().splitlines()][0] == ["router", "order AAPL#o-1 created → submitted"]


def test_every_line_names_its_day_so_a_log_of_several_days_reads_unambiguously(tmp_path):
    """A daemon runs for days: `tail | grep order` of two days' lines at the same time must say which day each is."""
    log = tmp_path / "catalyst.log"
    monday = json.dumps({"ts": "2026-11-23T10:00:01.123-05:00", "level": "INFO", "actor": "router", "msg": "order a"})
    tuesday = "2026-11-24 10:00:01.123 INFO    router       | order b"
    log.write_text(monday + "\n" + tuesday + "\n")
    out = io.StringIO()
    assert tail(log, None, follow=False, out=out) == 0
    assert [l.split()[:2] for l in out.getvalue().splitlines()] == [["2026-11-23", "10:00:01.123"],
                                                                     ["2026-11-24", "10:00:01.123"]]


def test_an_actor_no_line_has_says_so_and_which_actors_the_log_holds(tmp_path):
    """`--actor positon` (a typo) printed nothing and exited 0, which reads as "nothing happened"."""
    log = tmp_path / "catalyst.log"
    log.write_text("\n".join([line("router", "a"), line("position", "b"), "a plain line"]) + "\n")
    out, err = io.StringIO(), io.StringIO()
    assert tail(log, "positon", follow=False, out=out, err=err) == 1
    assert out.getvalue() == ""
    assert err.getvalue() == (f"catalyst tail: no line of actor 'positon' in {log} (actors in it: position, router)\n")
    out, err = io.StringIO(), io.StringIO()
    assert tail(log, "position", follow=False, out=out, err=err) == 0 and err.getvalue() == ""
