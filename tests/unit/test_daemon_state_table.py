"""The periodic state table (and the snapshot `catalyst status` shows) says entries are halted when the doctor halted
them, not only when the cycle did (the loss limit)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

from loguru import logger

from catalyst.config import load_config
from catalyst.daemon import Daemon
from catalyst.status import state_snapshot_path


def answer(value: Any) -> Any:
    return SimpleNamespace(get=lambda timeout=None: value)


def test_a_doctor_halt_shows_in_the_state_table_and_the_snapshot(tmp_path):
    config_file = tmp_path / "config.toml"
    config_file.write_text('[daemon]\ndatabase_url = "sqlite+aiosqlite:///catalyst.db"\n')
    now = datetime(2026, 3, 2, 15, 0, tzinfo=timezone.utc)
    daemon = Daemon(load_config(config_file), SimpleNamespace(clock=SimpleNamespace(now=lambda: now)),  # type: ignore[arg-type]
                    f"sqlite+aiosqlite:///{tmp_path / 'catalyst.db'}")
    daemon.cycle = SimpleNamespace(proxy=lambda: SimpleNamespace(state=lambda: answer({"phase": "monitoring",
                                                                                        "halted": None})))
    daemon.system = SimpleNamespace(supervisor=SimpleNamespace(live_refs=lambda: answer([])))
    daemon.hooks = SimpleNamespace(doctor=SimpleNamespace(halt_reason=answer("another catalyst daemon (database x)")))
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(message.record["message"]), level="INFO")
    try:
        daemon.log_state_table()
    finally:
        logger.remove(sink)
    assert lines == ["state 2026-03-02 15:00 phase=monitoring live=0 halted=another catalyst daemon (database x)"]
    snapshot = json.loads(state_snapshot_path(tmp_path / "catalyst.db").read_text())
    assert snapshot["halted"] == "another catalyst daemon (database x)"
