"""Where each alpaca-py client is pointed, from the config: market data never goes to a trading host."""

from __future__ import annotations

from pathlib import Path

from actors.system import alpaca_factories
from catalyst.config import load_config, load_secrets
from catalyst.runtime import open_endpoint

KEYS = {"APCA_API_KEY_ID": "PKTESTKEY000", "APCA_API_SECRET_KEY": "not-a-real-secret"}


def endpoint(tmp_path: Path, broker: str):
    path = tmp_path / "catalyst.toml"
    path.write_text(f"[broker]\n{broker}")
    return open_endpoint(load_config(path), load_secrets(KEYS))


def test_a_paper_config_naming_the_trading_url_still_reads_market_data_from_alpacas_data_host(tmp_path: Path) -> None:
    # `data_base = data_url or trading_url` sent every bar, snapshot and screener call to paper-api: 404s, no scan.
    ep = endpoint(tmp_path, 'mode = "paper"\nurl = "https://paper-api.alpaca.markets"\n')
    broker = alpaca_factories(ep.key_id, ep.secret, ep.trading_url, ep.stream_url, paper=ep.paper,
                              data_url=ep.data_url)[0]("test")

    assert ep.data_url == "https://data.alpaca.markets"
    assert broker._data._base_url == "https://data.alpaca.markets"
    assert broker._screener._base_url == "https://data.alpaca.markets"
    assert broker._orders._base_url == "https://paper-api.alpaca.markets"


def test_a_configured_data_url_is_the_one_used(tmp_path: Path) -> None:
    ep = endpoint(tmp_path, 'mode = "live"\ndata_url = "https://data.example.test"\n')
    broker = alpaca_factories(ep.key_id, ep.secret, ep.trading_url, ep.stream_url, paper=ep.paper,
                              data_url=ep.data_url)[0]("test")

    assert (ep.paper, ep.trading_url, ep.data_url) == (False, None, "https://data.example.test")
    assert broker._data._base_url == "https://data.example.test"
