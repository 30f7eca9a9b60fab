"""The shipped supervisor configs restart what a restart can mend (a crash, a kill, a broker back, a disk freed or a
lock let go) and leave stopped what needs a human (bad config or keys, a second daemon): a restart every 10 s forever
on refused keys helps nobody. A database fault (3) is restarted: not restarted, a lock held 31 s left the shares it
caught without a stop until someone noticed (a review), where the next start protects them. The exit codes are catalyst.errors', so a renumbering
there shows here."""

from __future__ import annotations

import configparser
from pathlib import Path
from types import SimpleNamespace

import pytest

from catalyst.broker.errors import AuthError, MalformedResponse
from catalyst.clock import WallClock
from catalyst.config import load_config
from catalyst.daemon import Daemon
from catalyst.errors import (
    AccountCannotTrade, ActorDied, AlreadyRunning, BrokerUnavailable, ConfigError, DatabaseError, KeysRefused,
)

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
NEEDS_A_HUMAN = {ConfigError.exit_code, AccountCannotTrade.exit_code, KeysRefused.exit_code, AlreadyRunning.exit_code}
RESTARTED = {ActorDied.exit_code, DatabaseError.exit_code, BrokerUnavailable.exit_code}


def read(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False, comment_prefixes=("#", ";"))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd's keys are case-sensitive
    parser.read(DEPLOY / name)
    return parser


def test_the_codes_split_as_the_readme_says() -> None:
    assert NEEDS_A_HUMAN == {2, 5} and RESTARTED == {1, 3, 4}


def test_systemd_restarts_a_crash_a_kill_or_a_broker_outage_but_not_what_needs_a_human() -> None:
    service = read("catalyst.service")["Service"]
    assert service["Restart"] == "on-failure"  # a non-zero exit, a kill by a signal, a timeout; never exit 0
    prevented = {int(code) for code in service["RestartPreventExitStatus"].split()}
    assert prevented == NEEDS_A_HUMAN
    assert not prevented & RESTARTED


def test_supervisord_restarts_a_crash_a_kill_or_a_broker_outage_but_not_what_needs_a_human() -> None:
    program = read("supervisord.conf")["program:catalyst"]
    assert program["autorestart"] == "unexpected"  # an exit code not listed, or a kill by a signal, is restarted
    expected = {int(code) for code in program["exitcodes"].split(",")}
    assert expected == {0} | NEEDS_A_HUMAN
    assert not expected & RESTARTED


def test_api_keys_the_broker_refuses_end_as_a_usage_error_not_as_an_unreachable_broker(tmp_path: Path) -> None:
    """Exit 4 was both "keys refused" (a human must change them) and "broker unreachable" (a restart may outlast it):
    no supervisor could tell them apart, so the keys restarted every 10 s forever."""
    config_file = tmp_path / "config.toml"
    config_file.write_text("[broker]\nstartup_wait_s = 5\n")

    class RefusingBroker:
        def account(self) -> None:
            raise AuthError("unauthorized.", status=401, operation="get_account")

    endpoint = SimpleNamespace(trading_url="https://paper-api.alpaca.markets", mode="paper", clock=WallClock())
    daemon = Daemon(load_config(config_file), endpoint, "sqlite:///unused.db")  # type: ignore[arg-type]
    daemon.broker = RefusingBroker()
    with pytest.raises(KeysRefused) as refused:
        daemon._check_broker()
    assert refused.value.exit_code == 2
    assert str(refused.value) == ("the broker refused our keys: not authorized (needs a human) HTTP 401: unauthorized. "
                                  "(get_account); set APCA_API_KEY_ID and APCA_API_SECRET_KEY to this account's keys "
                                  "(paper), then start again")


def test_an_account_answer_that_cannot_be_read_is_not_called_an_unreachable_broker(tmp_path: Path) -> None:
    """Waited out as an outage is (a proxy's page may pass), then exit 4, but said as what it is: the broker answered."""
    config_file = tmp_path / "config.toml"
    config_file.write_text("[broker]\nstartup_wait_s = 0\n")

    class GarblingBroker:
        def account(self) -> None:
            raise MalformedResponse("account equity 'lots' is not a number", operation="account")

    endpoint = SimpleNamespace(trading_url="https://paper-api.alpaca.markets", mode="paper", clock=WallClock())
    daemon = Daemon(load_config(config_file), endpoint, "sqlite:///unused.db")  # type: ignore[arg-type]
    daemon.broker = GarblingBroker()
    with pytest.raises(BrokerUnavailable) as unavailable:
        daemon._check_broker()
    assert unavailable.value.exit_code == 4
    assert str(unavailable.value) == (
        "broker at https://paper-api.alpaca.markets answers the account read with what the daemon cannot read for 0 s: "
        "malformed broker response: account equity 'lots' is not a number (account)")
