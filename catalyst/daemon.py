"""`catalyst run`: the foreground daemon a supervisor manages."""

from __future__ import annotations

import argparse

from loguru import logger

from catalyst.config import Config, load_config, load_secrets
from catalyst.errors import UsageError
from catalyst.logs import setup_logging


def prepare(args: argparse.Namespace) -> tuple[Config, list[str]]:
    """Load and check everything a run needs before any actor starts; returns the config and the secrets to redact."""
    config = load_config(args.config)
    if getattr(args, "broker_url", None):
        config = config.model_copy(update={"broker": config.broker.model_copy(update={"url": args.broker_url})})
    secrets = load_secrets()
    setup_logging(
        level=getattr(args, "log_level", None) or config.logging.level,
        fmt=getattr(args, "log_format", None) or config.logging.format,
        file=config.logging.file,
        rotation=config.logging.rotation,
        retention=config.logging.retention,
        secrets=secrets.values(),
    )
    if config.broker.mode in ("paper", "live") and not secrets.present:
        raise UsageError(f"broker.mode = {config.broker.mode} needs APCA_API_KEY_ID and APCA_API_SECRET_KEY in the environment")
    if config.broker.mode == "live" and not (config.broker.live_confirmed and getattr(args, "i_mean_live", False)):
        raise UsageError("broker.mode = live needs broker.live_confirmed = true in the config AND --i-mean-live")
    return config, secrets.values()


def run_daemon(args: argparse.Namespace) -> int:
    config, _ = prepare(args)
    from catalyst.store.migrate import upgrade

    revision = upgrade(config.daemon.database_url)
    logger.bind(actor="system").info(
        f"config {config.source} ok; database {config.database_path} at revision {revision}; broker mode {config.broker.mode}"
    )
    return 0
