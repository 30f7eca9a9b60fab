"""Catalyst: a headless, actor-based day-trading daemon for US stocks on Alpaca."""
