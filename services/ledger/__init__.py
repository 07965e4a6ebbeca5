"""Ledger service: fills in, positions with tranches and P&L out; the authoritative position."""
