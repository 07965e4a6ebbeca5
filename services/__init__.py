"""The Tranche services; none imports another."""
