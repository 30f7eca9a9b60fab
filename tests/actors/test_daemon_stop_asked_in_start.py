"""A stop asked during the daemon's start whose exception never got through (Python discards one raised inside a
garbage-collection or weakref callback): a review saw the start go on to its doctor pass, its cycle and its first
entries, every later TERM ignored. The start's steps check the remembered stop (catalyst.stop_request)."""

from __future__ import annotations

import threading

import pykka
import pytest

from catalyst import stop_request
from catalyst.config import load_config
from catalyst.daemon import Daemon
from catalyst.errors import StopDuringStartup
from catalyst.runtime import Endpoint


def test_a_stop_asked_while_the_broker_is_checked_starts_no_actor(exchange, tmp_path):
    config_file = tmp_path / "config.toml"
    config_file.write_text('[daemon]\ndatabase_url = "sqlite+aiosqlite:///catalyst.db"\n')
    endpoint = Endpoint("emulator", exchange.base_url, exchange.stream_url, "PKSTOPASKED", "secret", exchange.clock)
    daemon = Daemon(load_config(config_file), endpoint, f"sqlite+aiosqlite:///{tmp_path / 'catalyst.db'}",
                    stop_event=threading.Event())
    check_broker = daemon._check_broker

    def asked_meanwhile() -> None:  # the TERM lands during the account read; its exception is lost
        check_broker()
        stop_request.ask("SIGTERM")

    daemon._check_broker = asked_meanwhile  # type: ignore[method-assign]
    before = set(pykka.ActorRegistry.get_all())

    with pytest.raises(StopDuringStartup, match="SIGTERM"):
        daemon.start()

    assert set(pykka.ActorRegistry.get_all()) == before and daemon.parts == []  # no system, no cycle
