"""Market-data feeds: each publishes ``tranche.market.ticker.<product>`` with event time."""
