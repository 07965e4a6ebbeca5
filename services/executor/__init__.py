"""Executor service: approved intents in, exchange orders and their lifecycle events out."""
