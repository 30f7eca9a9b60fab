"""Config: validation errors are one line naming the key; secrets only from the environment; paths resolve."""

from __future__ import annotations

from pathlib import Path

import pytest

from catalyst.config import load_config, load_secrets
from catalyst.domain.reconcile import FindingType, Policy
from catalyst.errors import ConfigError

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_shipped_config_is_valid_and_uses_the_emulator():
    config = load_config(REPO_CONFIG)
    assert config.broker.mode == "emulator"
    assert config.exchange.symbols >= 50
    assert (config.router.protection_workers, config.router.general_workers) == (8, 2)


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    path = write(tmp_path, '[daemon]\ndatabase_url = "sqlite+aiosqlite:///var/c.db"\nreports_dir = "out"\n')
    config = load_config(path)
    assert config.database_path == tmp_path / "var" / "c.db"
    assert config.daemon.reports_dir == tmp_path / "out"


def test_environment_overrides_the_file(tmp_path, monkeypatch):
    path = write(tmp_path, '[broker]\ntimeout_s = 5\n')
    monkeypatch.setenv("CATALYST_BROKER__TIMEOUT_S", "7.5")
    assert load_config(path).broker.timeout_s == 7.5


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[broker]\nmode = "papr"\n', "broker.mode: Input should be 'emulator', 'paper' or 'live' (got 'papr')"),
        ('[broker]\nbogus = 1\n', "broker.bogus: unknown key"),
        ('[daemon]\nshutdown_timeout_s = "soon"\n', "daemon.shutdown_timeout_s: Input should be a valid number"),
        ('[exchange]\nsymbols = 1\n', "exchange.symbols: Input should be greater than or equal to 5"),
        ('[surprise]\nx = 1\n', "surprise: unknown key"),
        ("x = \n", "invalid TOML"),
        ('[broker]\nsecret_key = "abc"\n', "broker.secret_key: secrets are not read from config files"),
        ('[daemon]\ndatabase_url = "postgresql://x/y"\n',
         "daemon.database_url: must name an SQLite file: \"sqlite+aiosqlite:///PATH\" (got 'postgresql://x/y')"),
        ('[daemon]\ndatabase_url = "sqlite+aiosqlite:///:memory:"\n', "daemon.database_url: must name an SQLite file"),
        # No file named, or a folder: accepted, then "disk I/O error" on the config's folder at the first open.
        ('[daemon]\ndatabase_url = "sqlite+aiosqlite:///"\n', "daemon.database_url: must name an SQLite file"),
        ('[daemon]\ndatabase_url = "sqlite+aiosqlite:///var/"\n', "daemon.database_url: must name an SQLite file"),
        # loguru takes it and rotates at every line: with retention 10, the last 11 lines were all a log kept.
        ('[logging]\nrotation = "0 MB"\n', "logging.rotation: '0 MB' rotates the log at every line"),
        ('[exchange]\nspeed = nan\n', "exchange.speed: Input should be a finite number"),
        ('[exchange]\nspeed = 1e9\n', "exchange.speed: Input should be less than or equal to 10000"),
        ('[daemon]\ncpu = "fast"\n', 'daemon.cpu: must be "auto", "all" or a CPU number (0, 1, ...) (got \'fast\')'),
        ('[daemon]\ncpu = -1\n', 'daemon.cpu: must be "auto", "all" or a CPU number (0, 1, ...) (got -1)'),
        ('[router]\nprotection_workers = 0\n', "router.protection_workers: Input should be greater than or equal to 1"),
        ('[router]\ngeneral_workers = 33\n', "router.general_workers: Input should be less than or equal to 32"),
        ('[scanner]\nuniverse = "everything"\n', "scanner.universe: Input should be 'all' or 'screener'"),
        ('[exchange]\nwash_trade_check = true\n',
         "exchange.wash_trade_check: Input should be 'off', 'alpaca' or 'strict' (got True)"),
        # alpaca-py sends orders wherever url_override points, whatever `paper` says: live keys and this config
        # would trade real money without live_confirmed and --i-mean-live
        ('[broker]\nmode = "paper"\nurl = "https://api.alpaca.markets"\n',
         "broker.url = 'https://api.alpaca.markets' is Alpaca's live API, but broker.mode = paper"),
        ('[broker]\nmode = "paper"\nstream_url = "wss://api.alpaca.markets/stream"\n',
         "broker.stream_url = 'wss://api.alpaca.markets/stream' is Alpaca's live API, but broker.mode = paper"),
        ('[broker]\nurl = "https://API.alpaca.markets/"\n', "is Alpaca's live API, but broker.mode = emulator"),
        ('[broker]\nmode = "paper"\nurl = "https://api.alpaca.markets.:443/"\n', "is Alpaca's live API"),
        ('[broker]\nurl = "https://paper-api.alpaca.markets"\n',
         "is Alpaca, but broker.mode = emulator: use broker.mode = \"paper\" for Alpaca's paper account"),
        ('[broker]\nmode = "live"\nurl = "https://paper-api.alpaca.markets"\n',
         "is Alpaca's paper API, but broker.mode = live"),
        # Without a scheme or a host every request fails, which start-up took for a broker down for startup_wait_s
        ('[broker]\nmode = "paper"\nurl = "127.0.0.1:8765"\n',
         "broker.url: not a URL (expected http:// or https:// and a host) (got '127.0.0.1:8765')"),
        ('[broker]\nurl = "http://127.0.0.1:99999"\n', "broker.url: not a URL: Port out of range 0-65535"),
        ('[broker]\nstream_url = "ftp://127.0.0.1/stream"\n',
         "broker.stream_url: not a URL (expected http:// or https:// or ws:// or wss:// and a host)"),
        ('[broker]\ndata_url = "https://"\n', "broker.data_url: not a URL (expected http:// or https:// and a host)"),
        # Checked with the config: it was parsed only when the exchange started, a pydantic dump of its own model
        ('[exchange]\nfaults = "x=1"\n', "exchange.faults: bad fault item 'x=1': unknown fault 'x'"),
        ('[exchange]\nfaults = "drop=2"\n', "exchange.faults: bad fault item 'drop=2': a rate must be between 0 and 1"),
    ],
)
def test_bad_config_names_the_key_and_the_problem(tmp_path, text, expected):
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message
    assert caught.value.exit_code == 2


def test_daemon_cpu_is_one_cpu_by_default_and_takes_a_number_from_the_environment(tmp_path, monkeypatch):
    assert load_config(REPO_CONFIG).daemon.cpu == "auto"
    assert load_config(write(tmp_path, '[daemon]\ncpu = "all"\n')).daemon.cpu == "all"
    monkeypatch.setenv("CATALYST_DAEMON__CPU", "1")
    assert load_config(write(tmp_path, "")).daemon.cpu == 1


def test_each_mode_takes_its_own_alpaca_urls(tmp_path):
    paper = load_config(write(tmp_path, '[broker]\nmode = "paper"\nurl = "https://paper-api.alpaca.markets"\n'
                                        'data_url = "https://data.alpaca.markets"\n'))
    live = load_config(write(tmp_path, '[broker]\nmode = "live"\nurl = "https://api.alpaca.markets"\n'))
    assert (paper.broker.url, live.broker.url) == ("https://paper-api.alpaca.markets", "https://api.alpaca.markets")


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.toml: config file not found"):
        load_config(tmp_path / "nope.toml")


def test_a_bad_environment_override_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("CATALYST_BROKER__MODE", "yolo")
    with pytest.raises(ConfigError, match="broker.mode"):
        load_config(write(tmp_path, ""))


def test_a_bad_value_from_the_environment_is_blamed_on_its_variable_not_on_the_file(tmp_path, monkeypatch):
    config = write(tmp_path, "[risk]\nmax_open_positions = 5\n")
    monkeypatch.setenv("CATALYST_RISK__MAX_OPEN_POSITIONS", "abc")
    with pytest.raises(ConfigError) as raised:
        load_config(config)
    assert str(raised.value).startswith(f"CATALYST_RISK__MAX_OPEN_POSITIONS (environment, over {config}): "
                                        "risk.max_open_positions: ")

    monkeypatch.delenv("CATALYST_RISK__MAX_OPEN_POSITIONS")
    monkeypatch.setenv("CATALYST_RISK__MAX_OPEN_POSITON", "3")  # a typo'd key
    with pytest.raises(ConfigError) as raised:
        load_config(config)
    assert str(raised.value) == (f"CATALYST_RISK__MAX_OPEN_POSITON (environment, over {config}): "
                                 "risk.max_open_positon: unknown key")


def test_a_whole_section_set_from_the_environment_is_merged_and_its_faults_are_named(tmp_path, monkeypatch):
    config = write(tmp_path, "[risk]\nmax_open_positions = 5\nallow_short = true\n")
    monkeypatch.setenv("CATALYST_RISK", '{"max_open_positions": 3}')  # pydantic-settings reads a section as JSON
    loaded = load_config(config)
    assert loaded.risk.max_open_positions == 3 and loaded.risk.allow_short  # merged over the file's section

    monkeypatch.setenv("CATALYST_RISK", '{"max_open_positions": "abc"}')
    with pytest.raises(ConfigError) as raised:
        load_config(config)
    assert str(raised.value).startswith(f"CATALYST_RISK (environment, over {config}): risk.max_open_positions: ")

    monkeypatch.setenv("CATALYST_RISK", "{max_open_positions: 3")  # not JSON: was an "internal error" traceback
    with pytest.raises(ConfigError) as raised:
        load_config(config)
    assert str(raised.value) == (f"CATALYST_RISK (environment, over {config}): not valid JSON for the [risk] section; "
                                 "set one key as CATALYST_RISK__<KEY>=VALUE instead")

    # The section's variable sets other keys: a bad value in the file is the file's.
    bad_file = tmp_path / "bad.toml"
    bad_file.write_text('[risk]\nmax_open_positions = "abc"\n')
    monkeypatch.setenv("CATALYST_RISK", '{"allow_short": true}')
    with pytest.raises(ConfigError) as raised:
        load_config(bad_file)
    assert str(raised.value).startswith(f"{bad_file}: risk.max_open_positions: ")
    monkeypatch.delenv("CATALYST_RISK")

    monkeypatch.setenv("CATALYST_DOCTOR__POLICIES", "notjson")  # a table setting is read as JSON too
    with pytest.raises(ConfigError) as raised:
        load_config(config)
    assert str(raised.value) == (f"CATALYST_DOCTOR__POLICIES (environment, over {config}): a [doctor] setting that is "
                                 "a list or table must be valid JSON")


def test_an_override_for_a_section_that_does_not_exist_is_refused_not_ignored(tmp_path, monkeypatch):
    config = write(tmp_path, "")
    monkeypatch.setenv("CATALYST_RISKS__MAX_OPEN_POSITIONS", "3")
    monkeypatch.setenv("CATALYST_TRACEBACK", "1")  # not an override (no `__`): left alone
    with pytest.raises(ConfigError) as raised:
        load_config(config)
    assert str(raised.value).startswith(f"CATALYST_RISKS__MAX_OPEN_POSITIONS (environment, over {config}): no "
                                        "config section 'risks' (sections: ")
    assert "risk" in str(raised.value)


def test_secrets_come_in_pairs_from_the_environment():
    assert not load_secrets({}).present
    both = load_secrets({"APCA_API_KEY_ID": "AK1", "APCA_API_SECRET_KEY": "s3cr3t"})
    assert both.present and both.values() == ["AK1", "s3cr3t"]
    assert "s3cr3t" not in repr(both)
    with pytest.raises(ConfigError, match="APCA_API_SECRET_KEY is not set"):
        load_secrets({"APCA_API_KEY_ID": "AK1"})


def _numeric_keys(model: type, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    import decimal
    import typing

    from pydantic import BaseModel

    keys = []
    hints = typing.get_type_hints(model)
    for name in model.model_fields:
        for kind in typing.get_args(hints[name]) or (hints[name],):
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                keys += _numeric_keys(kind, prefix + (name,))
            elif kind is float or kind is decimal.Decimal:
                keys.append(prefix + (name,))
    return keys


def test_no_numeric_key_takes_infinity_or_nan(tmp_path):
    """TOML spells inf and nan; a timeout or an interval of inf would mean never (a doctor that never runs)."""
    from catalyst.config import Config

    keys = _numeric_keys(Config)
    assert len(keys) >= 40 and ("doctor", "interval_s") in keys and ("risk", "daily_loss_limit") in keys
    for key in keys:
        for value in ("inf", "-inf", "nan"):
            with pytest.raises(ConfigError) as caught:
                load_config(write(tmp_path, f"[{'.'.join(key[:-1])}]\n{key[-1]} = {value}\n"))
            assert str(caught.value).startswith(f"{tmp_path / 'config.toml'}: {'.'.join(key)}: "), caught.value


@pytest.mark.parametrize("key_id", ["PK\nSPLIT", "PKODD\u20acKEY", "PK KEY", 'PK"KEY', "PK\x00KEY"])
def test_an_api_key_with_a_character_no_key_has_is_refused_without_showing_it(key_id):
    # It failed inside the HTTP client, whose error showed the value escaped (b'PK\\nSPLIT'), past the log filter
    # that matches the value itself; and start-up took the failure for a broker that was down.
    with pytest.raises(ConfigError) as caught:
        load_secrets({"APCA_API_KEY_ID": key_id, "APCA_API_SECRET_KEY": "SKFINE123"})
    message = str(caught.value)
    assert message.startswith("APCA_API_KEY_ID holds a character an API key cannot have") and "\n" not in message
    assert "PK" not in message and caught.value.exit_code == 2
    with pytest.raises(ConfigError, match="^APCA_API_SECRET_KEY holds"):
        load_secrets({"APCA_API_KEY_ID": "PKFINE123", "APCA_API_SECRET_KEY": key_id.replace("PK", "SK")})
    assert load_secrets({"APCA_API_KEY_ID": " PKFINE123\n", "APCA_API_SECRET_KEY": "SKFINE123"}).present  # trimmed


def test_environment_overrides_of_doctor_policies_and_sources_are_taken_as_the_readme_says(tmp_path, monkeypatch):
    # pydantic-settings lower-cases environment names: a valid override was refused, and blamed on the file
    monkeypatch.setenv("CATALYST_DOCTOR__POLICIES__ORPHAN_ORDER", "halt")
    config = load_config(write(tmp_path, ""))
    assert config.doctor.policy(FindingType.ORPHAN_ORDER) is Policy.HALT
    monkeypatch.delenv("CATALYST_DOCTOR__POLICIES__ORPHAN_ORDER")
    # a variable naming a key below the bad one is named, not the file
    monkeypatch.setenv("CATALYST_RISK__MAX_OPEN_POSITIONS__X", "1")
    with pytest.raises(ConfigError, match=r"^CATALYST_RISK__MAX_OPEN_POSITIONS__X \(environment, over .*\): "
                                          r"risk.max_open_positions: "):
        load_config(write(tmp_path, ""))
    monkeypatch.delenv("CATALYST_RISK__MAX_OPEN_POSITIONS__X")
    # CATALYST_SOURCE moved every relative path (the database's) somewhere else
    monkeypatch.setenv("CATALYST_SOURCE", "/etc/passwd")
    config = load_config(write(tmp_path, '[daemon]\ndatabase_url = "sqlite+aiosqlite:///var/c.db"\n'))
    assert config.database_path == tmp_path / "var" / "c.db"


def test_a_config_that_is_a_pipe_is_refused_instead_of_read_forever(tmp_path):
    import os

    os.mkfifo(tmp_path / "config.toml")
    with pytest.raises(ConfigError, match=r"config.toml: not a regular file \(a pipe or a device would be read forever\)$"):
        load_config(tmp_path / "config.toml")


def test_an_empty_broker_url_from_the_environment_unsets_the_files(tmp_path, monkeypatch):
    monkeypatch.setenv("CATALYST_BROKER__URL", "")
    assert load_config(write(tmp_path, '[broker]\nurl = "http://127.0.0.1:8765"\n')).broker.url is None
