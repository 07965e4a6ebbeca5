"""Exchanges the executor can place orders on: the mock exchange (default) and, later, Coinbase."""
