"""Safety service: the only one allowed to say yes."""
