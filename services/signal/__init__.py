"""Signal service: market data and strategies in, trade intents out."""
