"""What every Tranche service needs: contracts, subjects, streams, settings, logging, HTTP,
outbox."""
