"""Pieces of a bots file the tests write, so each names only its own bots."""

ETH_BTC = """
[products.ETH-BTC]
base_min_size = "0.001"
base_increment = "0.00000001"
quote_increment = "0.00000001"
quote_min_size = "0.0001"
"""
"""The ETH-BTC product as the bundled catalog has it (the tests' bots trade it)."""
