"""Crash and chaos testing for Catalyst: a broker in its own process, kill -9 of the daemon, and an invariant checker."""
