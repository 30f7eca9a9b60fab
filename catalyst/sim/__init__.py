"""An Alpaca-compatible exchange emulator: market replay, matching, REST + stream, faults."""
