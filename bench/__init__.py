"""Catalyst's benchmarks: figures measured side by side in one run (`python -m bench [--quick] [--only NAME]`)."""
