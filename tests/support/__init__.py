"""Helpers the test rings share: a real NATS server and PostgreSQL databases."""
