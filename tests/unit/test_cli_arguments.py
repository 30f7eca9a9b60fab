"""Bad command-line numbers get one line naming the argument and the value, exit 2, and start nothing."""

from __future__ import annotations

import pytest

from catalyst.cli import main


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["sim", "--days", "x"], "argument --days: must be a whole number, got 'x'"),
        (["sim", "--days", "0"], "argument --days: must be at least 1, got 0"),
        (["sim", "--speed", "fast"], "argument --speed: must be a number, got 'fast'"),
        (["sim", "--speed", "nan"], "argument --speed: must be greater than 0 and at most 10,000, got 'nan'"),
        (["sim", "--speed", "inf"], "argument --speed: must be greater than 0 and at most 10,000, got 'inf'"),
        (["sim", "--speed", "1e9"], "argument --speed: must be greater than 0 and at most 10,000, got '1e9'"),
        (["sim", "--speed", "0"], "argument --speed: must be greater than 0 and at most 10,000, got '0'"),
        (["exchange", "--speed", "nan"], "exchange: --speed: Input should be a finite number"),
        (["exchange", "--speed", "20000"], "exchange: --speed: Input should be less than or equal to 10000"),
        # named by the flag that sets them, not the emulator's own field names (starting_cash, allow_non_loopback=True)
        (["exchange", "--cash", "-5"], "exchange: --cash: Input should be greater than 0"),
        (["exchange", "--rate-limit", "-1"], "exchange: --rate-limit: Input should be greater than or equal to 0"),
        (["exchange", "--host", "0.0.0.0"], "exchange: --host: host '0.0.0.0' is not loopback: the emulator has no "
                                            "real auth, so it only binds 127.0.0.1/::1"),
    ],
)
def test_a_bad_number_is_one_line_naming_the_argument(argv, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be created: no database, no var/, no reports/
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert expected in err[0]
    assert "Traceback" not in err[0] and "_positive" not in err[0] and "_sim_speed" not in err[0]
    assert "allow_non_loopback" not in err[0] and "starting_cash" not in err[0]
    assert list(tmp_path.iterdir()) == []


def test_a_reports_dir_that_cannot_be_created_stops_catalyst_run_at_start_with_one_line(capsys, tmp_path):
    import os

    (tmp_path / "plain-file").write_text("")
    config = tmp_path / "config.toml"
    config.write_text('[daemon]\nreports_dir = "plain-file/reports"\ndatabase_url = "sqlite+aiosqlite:///c.db"\n')
    umask = os.umask(0o022)
    os.umask(umask)
    try:
        assert main(["run", "--config", str(config)]) == 2
    finally:
        os.umask(umask)  # `catalyst run` narrows it for the daemon's files; not for the rest of the suite
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"catalyst: error: {config}: daemon.reports_dir: cannot create "
                       f"{tmp_path / 'plain-file' / 'reports'}: Not a directory"), err
    assert not (tmp_path / "c.db").exists()  # refused before the database was touched


@pytest.mark.parametrize(
    ("mode", "url", "expected"),
    [
        # With live keys in the environment this paper config would have traded real money: --broker-url used to be
        # copied into the config without its checks
        ("paper", "https://api.alpaca.markets", "is Alpaca's live API, but broker.mode = paper"),
        ("emulator", "https://paper-api.alpaca.markets", "is Alpaca, but broker.mode = emulator"),
        ("emulator", "not a url", "not a URL (expected http:// or https:// and a host) (got 'not a url')"),
    ],
)
def test_a_broker_url_on_the_command_line_is_checked_as_the_configs_own(mode, url, expected, capsys, tmp_path,
                                                                       monkeypatch):
    monkeypatch.setenv("APCA_API_KEY_ID", "PKLIVEKEY")
    monkeypatch.setenv("APCA_API_SECRET_KEY", "SKLIVESECRET")
    config = tmp_path / "config.toml"
    config.write_text(f'[broker]\nmode = "{mode}"\n[daemon]\ndatabase_url = "sqlite+aiosqlite:///c.db"\n')
    assert main(["run", "--config", str(config), "--broker-url", url]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"catalyst: error: --broker-url {url!r}: ") and expected in err[-1], err
    assert "SKLIVESECRET" not in "\n".join(err)
    assert not (tmp_path / "c.db").exists()  # refused before anything was touched


@pytest.mark.parametrize("kind", ["garbage", "directory"])
def test_a_database_that_is_not_one_is_refused_before_waiting_for_the_broker(kind, tmp_path):
    import subprocess
    import sys
    import time
    from pathlib import Path

    database = tmp_path / "catalyst.db"
    if kind == "garbage":
        database.write_text("these are not the orders you are looking for\n")
    else:
        database.mkdir()
    config = tmp_path / "config.toml"
    config.write_text('[daemon]\ndatabase_url = "sqlite+aiosqlite:///catalyst.db"\n[broker]\nstartup_wait_s = 60\n')
    started = time.monotonic()
    done = subprocess.run(  # a process of its own: `catalyst run` installs signal handlers and narrows the umask
        [sys.executable, "-m", "catalyst.cli", "run", "--config", str(config), "--broker-url", "http://127.0.0.1:9"],
        capture_output=True, text=True, timeout=50, cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 3, done.stderr[-2000:]
    expected = "not an SQLite database (wrong file header)" if kind == "garbage" else "is a directory, not a database file"
    assert done.stderr.strip().splitlines()[-1] == f"catalyst: error: {database}: {expected}"
    assert "not answering" not in done.stderr and "unreachable" not in done.stderr  # it never waited for one
    assert time.monotonic() - started < 40


def test_catalyst_sim_refuses_a_daemon_database_named_as_its_own_and_leaves_it_whole(capsys, tmp_path, monkeypatch):
    # `catalyst sim` empties <database folder>/sim.db at every run: a paper daemon's database of that name was
    # deleted with its WAL. (No keys in the environment: a simulation trades at its own exchange and needs none.)
    monkeypatch.delenv("APCA_API_KEY_ID", raising=False)
    monkeypatch.delenv("APCA_API_SECRET_KEY", raising=False)
    (tmp_path / "var").mkdir()
    for suffix in ("", "-wal"):
        (tmp_path / "var" / f"sim.db{suffix}").write_bytes(b"the paper daemon's orders")
    config = tmp_path / "config.toml"
    config.write_text('[broker]\nmode = "paper"\n[daemon]\ndatabase_url = "sqlite+aiosqlite:///var/sim.db"\n')
    assert main(["sim", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"catalyst: error: {config}: daemon.database_url is {tmp_path / 'var' / 'sim.db'}, the file "
                       "`catalyst sim` empties at every run: give the daemon's database another name"), err
    assert all((tmp_path / "var" / f"sim.db{s}").read_bytes() == b"the paper daemon's orders" for s in ("", "-wal"))


def test_catalyst_sim_refuses_a_daemon_database_that_is_a_symlink_to_its_own(capsys, tmp_path, monkeypatch):
    # The daemon's var/orders.db a symlink to var/sim.db: the names differed, and `catalyst sim` emptied the file.
    monkeypatch.delenv("APCA_API_KEY_ID", raising=False)
    monkeypatch.delenv("APCA_API_SECRET_KEY", raising=False)
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "sim.db").write_bytes(b"the paper daemon's orders")
    (tmp_path / "var" / "orders.db").symlink_to("sim.db")
    config = tmp_path / "config.toml"
    # Absolute: a relative path is resolved already (catalyst.config._resolve_paths).
    config.write_text(f'[broker]\nmode = "paper"\n[daemon]\ndatabase_url = "sqlite+aiosqlite:///{tmp_path}/var/orders.db"\n')
    assert main(["sim", "--config", str(config)]) == 2
    assert "the file `catalyst sim` empties at every run" in capsys.readouterr().err
    assert (tmp_path / "var" / "sim.db").read_bytes() == b"the paper daemon's orders"


def test_catalyst_sim_refuses_a_daemon_database_that_is_a_hard_link_to_its_own(capsys, tmp_path, monkeypatch):
    # From a review: a hard link is the same file under another name, which resolving paths does not see; the
    # simulation's wipe then emptied the daemon's database (when it truncated the file it found).
    import os

    monkeypatch.delenv("APCA_API_KEY_ID", raising=False)
    monkeypatch.delenv("APCA_API_SECRET_KEY", raising=False)
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "orders.db").write_bytes(b"the paper daemon's orders")
    os.link(tmp_path / "var" / "orders.db", tmp_path / "var" / "sim.db")
    config = tmp_path / "config.toml"
    config.write_text(f'[broker]\nmode = "paper"\n[daemon]\ndatabase_url = "sqlite+aiosqlite:///{tmp_path}/var/orders.db"\n')
    assert main(["sim", "--config", str(config)]) == 2
    assert "the file `catalyst sim` empties at every run" in capsys.readouterr().err
    assert (tmp_path / "var" / "orders.db").read_bytes() == b"the paper daemon's orders"


@pytest.mark.parametrize("command", ["run", "sim"])
def test_a_stop_while_the_daemons_modules_load_is_a_clean_exit(command, tmp_path):
    # Loading the daemon's modules takes most of a second, before its own handlers: a TERM then killed the process
    # by the default action (exit -15, no line), where the README promises a clean stop during start-up.
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import os, signal, sys, time, types
        daemon = types.ModuleType("catalyst.daemon")  # stands in for the import: a TERM in the middle of it
        def arrives_while_loading(args):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
            return 3
        daemon.run_daemon = daemon.run_sim = arrives_while_loading
        sys.modules["catalyst.daemon"] = daemon
        from catalyst.cli import main
        sys.exit(main(["{command}"]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, (done.returncode, done.stderr)
    assert done.stderr.strip() == "catalyst: stopped by SIGTERM during start-up"


@pytest.mark.parametrize("where", ["http://127.0.0.1:9", "ftp://127.0.0.1:9"])  # unreachable; not a URL we take
def test_a_broker_url_with_the_keys_in_it_never_reaches_stderr(where, tmp_path):
    # The log line was redacted, but the final `catalyst: error: … unreachable at https://KEY:SECRET@…` was not.
    import os
    import subprocess
    import sys
    from pathlib import Path

    config = tmp_path / "config.toml"
    config.write_text('[daemon]\ndatabase_url = "sqlite+aiosqlite:///catalyst.db"\n[broker]\nstartup_wait_s = 0\n')
    scheme, _, host = where.partition("://")
    done = subprocess.run(  # a process of its own: `catalyst run` installs signal handlers and narrows the umask
        [sys.executable, "-m", "catalyst.cli", "run", "--config", str(config),
         "--broker-url", f"{scheme}://PKLEAKED:SECRETLEAKED@{host}"],
        capture_output=True, text=True, timeout=50, cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "APCA_API_KEY_ID": "PKLEAKED", "APCA_API_SECRET_KEY": "SECRETLEAKED"},
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1].startswith("catalyst: error: "), done.stderr
    assert "LEAKED" not in done.stderr, done.stderr
    assert f"{scheme}://***:***@{host}" in done.stderr.strip().splitlines()[-1]


def test_an_env_file_that_is_not_utf8_is_one_line_naming_it(capsys, tmp_path, monkeypatch):
    # It was `catalyst: internal error: UnicodeDecodeError: …`, exit 1.
    monkeypatch.chdir(tmp_path)
    env_file = tmp_path / "keys.env"
    env_file.write_bytes(b"APCA_API_KEY_ID=PK\xe9\xff\nAPCA_API_SECRET_KEY=abc\n")
    env_file.chmod(0o600)
    config = tmp_path / "config.toml"
    config.write_text("")
    assert main(["run", "--config", str(config), "--env-file", str(env_file)]) == 2
    assert capsys.readouterr().err.strip() == (f"catalyst: error: {env_file}: environment file is not UTF-8 text "
                                               "(byte 19 is not); save it as UTF-8")


def test_the_last_resort_error_line_is_one_line_whatever_the_exceptions_text(capsys, monkeypatch):
    """SQLAlchemy's errors carry the SQL, its parameters and a link on lines of their own: the exit line was 4 lines."""
    import sqlalchemy.exc

    import catalyst.sim.cli

    def fails(_args):
        raise sqlalchemy.exc.OperationalError("INSERT INTO t VALUES (?)", (1,), Exception("database is locked"))

    monkeypatch.setattr(catalyst.sim.cli, "run_exchange", fails)

    assert main(["exchange", "--port", "0"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("catalyst: internal error: OperationalError: (builtins.Exception) database is locked "
                             "[SQL: INSERT INTO t VALUES (?)] [parameters: (1,)]")
    assert err[1:] == ["catalyst: set CATALYST_TRACEBACK=1 to see where"]


@pytest.mark.parametrize("command", [["status"], ["stop"], ["tail"], ["db", "upgrade"]])
def test_every_command_keeps_the_keys_out_of_what_it_prints(command, capsys, tmp_path, monkeypatch):
    # Only `run` and `sim` registered the keys for redaction: the others quoted a bad broker URL holding them as is.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("APCA_API_KEY_ID", "PKTESTKEYID12345678")
    monkeypatch.setenv("APCA_API_SECRET_KEY", "SeCrEtKeY0000000001234")
    monkeypatch.setenv("CATALYST_BROKER__URL", "ftp://PKTESTKEYID12345678:SeCrEtKeY0000000001234@host")
    (tmp_path / "config.toml").write_text("")
    assert main([*command, "--config", str(tmp_path / "config.toml")]) == 2
    err = capsys.readouterr().err
    assert "ftp://***:***@host" in err and "PKTESTKEYID" not in err and "SeCrEt" not in err


def test_a_database_file_this_user_may_not_write_is_refused_at_start_naming_owner_and_mode(tmp_path, monkeypatch):
    # From a review: a database made read-only by its mode passed the start-up read, and the first write failed after
    # the broker's wait and a doctor pass, advising to free disk space. This suite runs as root, whom no mode stops:
    # the kernel's answer to another user is given by os.access.
    import os

    from catalyst import daemon as daemon_module
    from catalyst.errors import DatabaseError
    from catalyst.store.migrate import upgrade

    database = tmp_path / "catalyst.db"
    upgrade(f"sqlite+aiosqlite:///{database}")
    database.chmod(0o444)
    real_access = os.access
    monkeypatch.setattr(daemon_module.os, "access",
                        lambda path, mode: False if (path, mode) == (database, os.W_OK) else real_access(path, mode))

    with pytest.raises(DatabaseError) as refused:
        daemon_module._check_database_before_the_broker(f"sqlite+aiosqlite:///{database}")
    assert str(refused.value) == (f"{database}: this user (uid {os.getuid()}) may not write the database file (mode "
                                  f"444, owner uid {database.stat().st_uid}): run the daemon as its owner, or give it "
                                  "the file (chown, or chmod u+w)")
