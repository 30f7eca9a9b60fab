"""Keys in the environment while the config trades at the built-in exchange are said to be unused (a review: an
operator moving to paper who forgot `broker.mode` believed the day's trades were at Alpaca)."""

from __future__ import annotations

import argparse

from loguru import logger

from catalyst import daemon as daemon_module


def warnings_of_prepare(tmp_path, monkeypatch, config_text: str, keys: bool) -> list[str]:
    monkeypatch.setattr(daemon_module, "owner_only_files", lambda: None)  # the test process's umask stays
    monkeypatch.setattr(daemon_module, "_setup_logging", lambda *_: None)  # the test's own sink below
    for name, value in (("APCA_API_KEY_ID", "PKTESTKEY"), ("APCA_API_SECRET_KEY", "testsecret")):
        monkeypatch.setenv(name, value) if keys else monkeypatch.delenv(name, raising=False)
    config = tmp_path / "config.toml"
    config.write_text(config_text)
    said: list[str] = []
    sink = logger.add(lambda message: said.append(message.record["message"]), level="WARNING")
    try:
        daemon_module.prepare(argparse.Namespace(config=str(config), env_file=None, log_format=None, log_level=None))
    finally:
        logger.remove(sink)
    return said


def test_keys_with_the_built_in_exchange_are_said_unused(tmp_path, monkeypatch):
    said = warnings_of_prepare(tmp_path, monkeypatch, "", keys=True)
    assert [line for line in said if "are not used" in line] == [
        f"system broker.mode = emulator in {tmp_path / 'config.toml'}: the keys in the environment (APCA_API_KEY_ID, "
        "APCA_API_SECRET_KEY) are not used, the day trades at the built-in exchange; set broker.mode = \"paper\" to "
        "trade on Alpaca's paper account"]
    assert not any("PKTESTKEY" in line or "testsecret" in line for line in said)


def test_no_keys_or_an_emulator_of_its_own_url_says_nothing(tmp_path, monkeypatch):
    assert not [line for line in warnings_of_prepare(tmp_path, monkeypatch, "", keys=False) if "are not used" in line]
    external = '[broker]\nmode = "emulator"\nurl = "http://127.0.0.1:1"\n'  # there the keys are the account's
    assert not [line for line in warnings_of_prepare(tmp_path, monkeypatch, external, keys=True)
                if "are not used" in line]


def test_allow_short_is_said_to_enter_no_short_with_the_shipped_scanner(tmp_path, monkeypatch):
    # A review: `risk.allow_short = true` read as "trade shorts", yet the scanner ranks long setups only.
    said = warnings_of_prepare(tmp_path, monkeypatch, "[risk]\nallow_short = true\n", keys=False)
    assert [line for line in said if "allow_short" in line] == [
        f"system risk.allow_short = true in {tmp_path / 'config.toml'}: the scanner finds long setups only, so no "
        "short is entered; a short position on the account (placed by hand, adopted by the doctor) is protected and "
        "managed like a long either way"]
    assert not [line for line in warnings_of_prepare(tmp_path, monkeypatch, "", keys=False) if "allow_short" in line]
