"""The broker edge: the only importer of alpaca-py."""
