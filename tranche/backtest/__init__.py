"""``tranche backtest``: the services' own decision cores in one process (see docs/backtest.md)."""
