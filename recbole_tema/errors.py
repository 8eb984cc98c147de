class ConfigurationError(ValueError):
    """A run cannot start as configured; the message says what to change."""
