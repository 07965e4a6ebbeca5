"""The operator's command: ``tranche up | status | signal``."""
