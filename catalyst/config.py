"""config.toml, validated: one line naming the key and the problem on any error; secrets only from the environment.

Precedence: environment (`CATALYST_<SECTION>__<KEY>`, e.g. `CATALYST_BROKER__MODE=paper`) over the file over
defaults. Relative paths in the file resolve against the file's own folder, so the daemon behaves the same
whatever directory a supervisor starts it in.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from datetime import datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from catalyst.domain.cycle import PhaseSchedule
from catalyst.sim.clock import MAX_SPEED
from catalyst.sim.faults import FaultPlan, FaultSpecError
from catalyst.sim.wash_trade import WashTradeCheck
from catalyst.domain.errors import InvalidSchedule
from catalyst.domain.reconcile import DoctorSettings
from catalyst.domain.risk import RiskSettings
from catalyst.domain.scanning import ScannerSettings
from catalyst.router_settings import RouterSettings
from catalyst.errors import ConfigError

KEY_ID_ENV = "APCA_API_KEY_ID"
SECRET_KEY_ENV = "APCA_API_SECRET_KEY"
SECRET_LOOKING_KEYS = {"api_key", "api_secret", "key_id", "secret_key", "secret", "password", "token"}


class Section(BaseModel):
    # allow_inf_nan: TOML spells inf and nan, and a timeout or an interval of inf means "never" where a trader
    # meant a number (a doctor that never runs, a stop that never ends): refused like any other bad value.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DaemonSettings(Section):
    database_url: str = "sqlite+aiosqlite:///catalyst.db"
    reports_dir: Path = Path("reports")
    # A commit waits for the disk (FULL) so an order row survives power loss before the broker hears of it.
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    # With FULL: a commit that only records what the broker reported (statuses, broker ids, executions) does not
    # wait for its fsync; the next order row's commit carries it to disk, and the broker holds it until then.
    sqlite_defer_report_sync: bool = True
    state_table_interval_s: float = Field(default=60.0, gt=0)
    shutdown_timeout_s: float = Field(default=20.0, gt=0)
    # "auto": every thread on one CPU (CPython runs one thread's Python at a time; see catalyst/cpu.py), a CPU
    # number, or "all" to let the operating system place them.
    cpu: Literal["auto", "all"] | int = "auto"
    # Space set aside beside the database (`<database>-reserve`), given back when a full disk refuses a write, so the
    # fill in flight is recorded and its stop sent before the daemon stops (catalyst/store/reserve.py). 0: none.
    disk_reserve_mb: int = Field(default=8, ge=0, le=1024)

    @field_validator("database_url")
    @classmethod
    def _sqlite_file(cls, value: str) -> str:
        path = sqlite_path(value)
        named = value.partition(":///")[2].split("?", 1)[0]
        # The orders must outlive the process; an empty name or a folder's (Path("") is ".") failed only when opened,
        # as a "disk I/O error" on the config's folder.
        if path is None or named in ("", ":memory:") or named.endswith("/"):
            raise ValueError('must name an SQLite file: "sqlite+aiosqlite:///PATH"')
        return value

    @field_validator("cpu", mode="before")
    @classmethod
    def _cpu_setting(cls, value: Any) -> Any:
        if value in ("auto", "all"):
            return value
        if isinstance(value, str) and value.isdigit():
            return int(value)  # from the environment: CATALYST_DAEMON__CPU=1
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        raise ValueError('must be "auto", "all" or a CPU number (0, 1, ...)')


class LoggingSettings(Section):
    level: Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"
    file: Path | None = None
    rotation: str = "50 MB"
    retention: int = Field(default=10, ge=1)

    @field_validator("rotation")
    @classmethod
    def _rotation_above_zero(cls, value: str) -> str:
        # loguru takes "0 MB" and rotates at every line: with `retention` files kept, only that many lines survive.
        if re.fullmatch(r"\s*0*\.?0*\s*[kmgt]?i?b\s*", value, flags=re.IGNORECASE):
            raise ValueError(f"{value!r} rotates the log at every line: give a size above 0 or a time, e.g. \"50 MB\" "
                             "or \"1 day\"")
        return value


# Alpaca's live trading and trade-stream host (alpaca.common.enums.BaseURL: TRADING_LIVE, TRADING_STREAM_LIVE).
LIVE_HOSTS = frozenset({"api.alpaca.markets"})


class BrokerSettings(Section):
    mode: Literal["emulator", "paper", "live"] = "emulator"
    # An emulator running in its own process (`catalyst exchange`), or any Alpaca-compatible base URL.
    url: str | None = None
    stream_url: str | None = None
    data_url: str | None = None
    # Market data's feed: "auto" lets Alpaca pick for the account's plan and falls back to "iex" if the plan refuses
    # it; "iex" (every plan; a few percent of the tape's volume), "sip" (the whole tape, needs a subscription).
    data_feed: Literal["auto", "iex", "sip", "delayed_sip"] = "auto"
    timeout_s: float = Field(default=10.0, gt=0)
    # How long start-up waits (with backoff) for an unreachable broker before exiting with code 4.
    startup_wait_s: float = Field(default=300.0, ge=0)
    rate_limit_per_minute: int = Field(default=200, ge=0)
    # Live trading needs this AND `--i-mean-live` on the command line.
    live_confirmed: bool = False
    # This machine's clock against the broker's (/v2/clock), checked at start and by each doctor pass on the wall
    # clock (paper, live); past 2 s off the daemon's clock follows the broker's. Beyond this, start-up waits for time
    # sync (within startup_wait_s), then refuses with exit 2; mid-day it is an ERROR line.
    max_clock_skew_s: float = Field(default=60.0, gt=0)

    @field_validator("url", "stream_url", "data_url")
    @classmethod
    def _a_url(cls, value: str | None, info: Any) -> str | None:
        """A URL without its scheme or host (`127.0.0.1:8765`) is refused here: alpaca-py's requests would fail on
        it at every call, which start-up took for an unreachable broker and waited startup_wait_s for."""
        if value is None or not value.strip():
            return None  # CATALYST_BROKER__URL="" unsets the file's URL (the embedded exchange, for an emulator config)
        schemes = ("http", "https", "ws", "wss") if info.field_name == "stream_url" else ("http", "https")
        try:
            parts = urlsplit(value)
            _ = parts.port  # a port that is not a number raises here
        except ValueError as exc:
            raise ValueError(f"not a URL: {exc}") from None
        if parts.scheme not in schemes or not parts.hostname:
            raise ValueError(f"not a URL (expected {' or '.join(f'{s}://' for s in schemes)} and a host)")
        return value

    @model_validator(mode="after")
    def _urls_match_the_mode(self) -> BrokerSettings:
        """alpaca-py sends orders wherever `url_override` points, whatever `paper` says: a paper or emulator config
        with the live API's URL (and live keys in the environment) would trade real money without live_confirmed
        and --i-mean-live. A URL must be the mode's own."""
        for key in ("url", "stream_url", "data_url"):
            # hostname is lower-cased; a trailing dot names the same host (and passes the certificate check)
            host = (urlsplit(getattr(self, key) or "").hostname or "").rstrip(".")
            if not host.endswith("alpaca.markets"):
                continue
            if self.mode != "live" and host in LIVE_HOSTS:
                raise ValueError(f"broker.{key} = {getattr(self, key)!r} is Alpaca's live API, but broker.mode = "
                                 f"{self.mode}: live trading is broker.mode = \"live\" (with live_confirmed and "
                                 "--i-mean-live)")
            if self.mode == "emulator" and key != "data_url":
                raise ValueError(f"broker.{key} = {getattr(self, key)!r} is Alpaca, but broker.mode = emulator: "
                                 "use broker.mode = \"paper\" for Alpaca's paper account")
            if self.mode == "live" and host.startswith("paper-api."):
                raise ValueError(f"broker.{key} = {getattr(self, key)!r} is Alpaca's paper API, but broker.mode = "
                                 "live: use broker.mode = \"paper\", or leave the URL out")
        return self


class ExchangeSettings(Section):
    """The embedded exchange emulator used when broker.mode = "emulator" and no broker.url is given."""

    seed: int = 7
    speed: float = Field(default=720.0, ge=0, le=MAX_SPEED)  # 0 = manual clock
    start: datetime | None = None
    starting_cash: Decimal = Field(default=Decimal("100000"), gt=0)
    symbols: int = Field(default=50, ge=5, le=2000)
    data_file: Path | None = None
    data_kind: Literal["synthetic", "minute_csv", "daily_csv"] = "synthetic"
    participation: Decimal = Field(default=Decimal("0.25"), gt=0, le=1)
    rate_limit_per_minute: int = Field(default=200, ge=0)
    faults: str = ""
    # Its market-data plan: "basic" (Alpaca's free one) refuses recent SIP data, as a free paper account would.
    data_plan: Literal["unlimited", "basic"] = "unlimited"
    # Alpaca's wash-trade refusal: "alpaca", its published table (complex orders exempt); "strict", OCOs refused
    # too, as some users report; "off" (catalyst/sim/wash_trade.py).
    wash_trade_check: WashTradeCheck = "alpaca"
    # The positions endpoints answer as of this many wall seconds ago, as Alpaca's can lag its orders (0: live).
    positions_lag_s: float = Field(default=0.0, ge=0, le=600)
    # An exit may sell only shares held this many wall seconds ago too, as Alpaca's order entry can lag a fill (0: live).
    exit_shares_lag_s: float = Field(default=0.0, ge=0, le=600)
    # A triggered OCO stop reported as Alpaca was seen to: its take-profit ends `replaced`, then the stop fills.
    trigger_replaces_take_profit: bool = False

    @field_validator("faults")
    @classmethod
    def _a_fault_plan(cls, value: str) -> str:
        """Checked with the config, not when the exchange starts (a pydantic dump of the emulator's own model)."""
        try:
            FaultPlan.parse(value)
        except FaultSpecError as exc:
            raise ValueError(str(exc)) from None
        return value


class CycleSettings(Section):
    """The day's schedule in exchange time (America/New_York), spec §4.2."""

    scanning_at: time = time(9, 15)
    evaluating_at: time = time(9, 30)
    trading_at: time = time(9, 35)
    monitoring_at: time = time(10, 0)
    flatten_at: time = time(15, 55)
    closed_at: time = time(16, 0)

    def schedule(self) -> PhaseSchedule:
        return PhaseSchedule(**self.model_dump())

    @model_validator(mode="after")
    def _ordered(self) -> CycleSettings:
        try:
            self.schedule()
        except InvalidSchedule as exc:
            raise ValueError(str(exc)) from None
        return self


class Config(BaseSettings):
    """The whole configuration. Sections other issues add plug in here."""

    model_config = SettingsConfigDict(
        env_prefix="CATALYST_", env_nested_delimiter="__", extra="forbid", frozen=True, allow_inf_nan=False
    )

    daemon: DaemonSettings = DaemonSettings()
    logging: LoggingSettings = LoggingSettings()
    broker: BrokerSettings = BrokerSettings()
    exchange: ExchangeSettings = ExchangeSettings()
    cycle: CycleSettings = CycleSettings()
    risk: RiskSettings = RiskSettings()
    scanner: ScannerSettings = ScannerSettings()
    doctor: DoctorSettings = DoctorSettings()
    router: RouterSettings = RouterSettings()
    source: Path | None = Field(default=None, exclude=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over the file, which arrives as init arguments.
        return (env_settings, init_settings)

    @field_validator("source")
    @classmethod
    def _source_is_absolute(cls, value: Path | None) -> Path | None:
        return value.resolve() if value else None

    @property
    def base_dir(self) -> Path:
        return self.source.parent if self.source else Path.cwd()

    @property
    def database_path(self) -> Path | None:
        """The SQLite file, when the database is SQLite."""
        return sqlite_path(self.daemon.database_url)


class Secrets(BaseModel):
    """API keys, read from the environment only; SecretStr keeps them out of reprs."""

    model_config = ConfigDict(frozen=True)

    key_id: SecretStr | None = None
    secret_key: SecretStr | None = None

    @property
    def present(self) -> bool:
        return bool(self.key_id and self.secret_key)

    def values(self) -> list[str]:
        """The raw secret strings, for the log filter that keeps them out of every line."""
        return [s.get_secret_value() for s in (self.key_id, self.secret_key) if s and s.get_secret_value()]


def load_secrets(environ: dict[str, str] | None = None) -> Secrets:
    env = os.environ if environ is None else environ
    key_id, secret = env.get(KEY_ID_ENV, "").strip(), env.get(SECRET_KEY_ENV, "").strip()
    if bool(key_id) != bool(secret):
        missing = SECRET_KEY_ENV if key_id else KEY_ID_ENV
        raise ConfigError(f"{missing} is not set: set both {KEY_ID_ENV} and {SECRET_KEY_ENV}, or neither")
    for name, value in ((KEY_ID_ENV, key_id), (SECRET_KEY_ENV, secret)):
        # Alpaca's keys are letters and digits. Anything else (a pasted newline, a quote, a non-Latin-1 character)
        # fails inside the HTTP client, whose error shows the value escaped (b'...\n...'), which the log filter,
        # matching the value itself, would let through; and start-up took the failure for a broker that is down.
        if not value.isascii() or not value.isprintable() or any(c.isspace() or c in "'\"\\" for c in value):
            raise ConfigError(f"{name} holds a character an API key cannot have (a space, a quote, a control or "
                              "non-ASCII character): copy the key again from Alpaca's dashboard")
    return Secrets(key_id=SecretStr(key_id) if key_id else None, secret_key=SecretStr(secret) if secret else None)


def sqlite_path(url: str) -> Path | None:
    for prefix in ("sqlite+aiosqlite:///", "sqlite:///"):
        if url.startswith(prefix):
            return Path(url[len(prefix):].split("?", 1)[0])
    return None


def load_config(path: str | Path) -> Config:
    """Read and validate a config file; raise ConfigError with one line naming the file, key and problem."""
    path = Path(path)
    if path.exists() and not path.is_file() and not path.is_dir():
        raise ConfigError(f"{path}: not a regular file (a pipe or a device would be read forever)")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (UTF-8 expected)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    _refuse_secrets(path, data)
    _refuse_unknown_sections_in_environment(path)
    try:
        # The file's own path, whatever the environment says: CATALYST_SOURCE would otherwise move every relative
        # path (the database's among them) somewhere else.
        config = Config(**data).model_copy(update={"source": path.resolve()})
    except ValidationError as exc:
        raise ConfigError(f"{_source_of(exc, path)}: {describe_validation_error(exc)}") from None
    except SettingsError as exc:
        raise ConfigError(_unparsable_environment(exc, path)) from None
    except RuntimeError as exc:  # Path.resolve() on a symlink loop: an internal error, restarted forever
        raise ConfigError(f"{path}: {exc}") from None
    try:
        return _resolve_paths(config)
    except RuntimeError as exc:
        raise ConfigError(f"{path}: a path it names cannot be resolved: {exc}") from None


def _environment_names() -> dict[str, str]:
    """CATALYST_… variables by their upper-case name (pydantic-settings reads them regardless of case)."""
    return {name.upper(): name for name in os.environ if name.upper().startswith("CATALYST_")}


def _source_of(exc: ValidationError, path: Path) -> str:
    """Where the bad value came from: the environment variable that overrides the file's key, or the file. A value
    set in the environment was blamed on the file, whose own value was fine."""
    where = [str(part) for part in exc.errors(include_url=False)[0]["loc"]]
    names = _environment_names()
    # The key's own variable, else a section's that sets the key (CATALYST_RISK='{"max_open_positions": 5}').
    for depth in range(len(where), 0, -1):
        variable = names.get("CATALYST_" + "__".join(where[:depth]).upper())
        if variable and (depth == len(where) or _json_sets(os.environ[variable], where[depth:])):
            return f"{variable} (environment, over {path})"
    # A variable naming a key below the bad one (CATALYST_RISK__MAX_OPEN_POSITIONS__X=1 makes the key a table).
    below = "CATALYST_" + "__".join(where).upper() + "__"
    variable = next((names[n] for n in sorted(names) if n.startswith(below)), None)
    return f"{variable} (environment, over {path})" if variable else str(path)


def _json_sets(text: str, keys: list[str]) -> bool:
    try:
        value: Any = json.loads(text)
    except ValueError:
        return False
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return False
        value = value[key]
    return True


def _unparsable_environment(exc: SettingsError, path: Path) -> str:
    """pydantic-settings reads a section (or a list or table setting) from the environment as JSON, and when it
    does not parse says only the field: name the variable."""
    field = re.search(r'field "([^"]+)"', str(exc))
    if field is None:
        return f"environment, over {path}: {exc}"
    section = field.group(1)
    names = _environment_names()
    whole = names.get(f"CATALYST_{section}".upper())
    if whole is not None:
        return (f"{whole} (environment, over {path}): not valid JSON for the [{section}] section; "
                f"set one key as {whole}__<KEY>=VALUE instead")
    nested = sorted(name for upper, name in names.items() if upper.startswith(f"CATALYST_{section}__".upper()))
    return (f"{' or '.join(nested) or 'a CATALYST_' + section.upper() + ' variable'} (environment, over {path}): "
            f"a [{section}] setting that is a list or table must be valid JSON")


def _refuse_unknown_sections_in_environment(path: Path) -> None:
    """A CATALYST_<SECTION>__<KEY> whose section does not exist would be ignored without a word (pydantic-settings
    reads only the sections it knows): the operator believes a setting that is not in force. Names without `__`
    are not overrides (CATALYST_TRACEBACK and the like)."""
    sections = set(Config.model_fields) - {"source"}
    for upper, name in sorted(_environment_names().items()):
        section, nested, _ = upper.removeprefix("CATALYST_").partition("__")
        if nested and section.lower() not in sections:
            raise ConfigError(f"{name} (environment, over {path}): no config section {section.lower()!r} "
                              f"(sections: {', '.join(sorted(sections))})")


def _refuse_secrets(path: Path, data: dict[str, Any], prefix: str = "") -> None:
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            _refuse_secrets(path, value, f"{dotted}.")
        elif key.lower() in SECRET_LOOKING_KEYS:
            raise ConfigError(
                f"{path}: {dotted}: secrets are not read from config files; "
                f"set {KEY_ID_ENV} and {SECRET_KEY_ENV} in the environment"
            )


def describe_validation_error(exc: ValidationError) -> str:
    """The first problem as `section.key: message (got VALUE)`, plus how many more there are."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        text = f"{where}: unknown key"
    elif first["type"] == "missing":
        text = f"{where}: required key is missing"
    else:
        got = first.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        message = first["msg"].removeprefix("Value error, ")  # pydantic's prefix for a validator's ValueError
        text = f"{where}: {message}{shown}"
    if len(errors) > 1:
        text += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return text


def _resolve_paths(config: Config) -> Config:
    base = config.base_dir

    def absolute(p: Path | None) -> Path | None:
        return None if p is None else (p if p.is_absolute() else (base / p).resolve())

    db_url = config.daemon.database_url
    db_path = sqlite_path(db_url)
    if db_path is not None and str(db_path) not in ("", ":memory:") and not db_path.is_absolute():
        db_url = db_url[: db_url.index(":///") + 4] + str((base / db_path).resolve())
    return config.model_copy(
        update={
            "daemon": config.daemon.model_copy(
                update={"database_url": db_url, "reports_dir": absolute(config.daemon.reports_dir)}
            ),
            "logging": config.logging.model_copy(update={"file": absolute(config.logging.file)}),
            "exchange": config.exchange.model_copy(update={"data_file": absolute(config.exchange.data_file)}),
        }
    )
