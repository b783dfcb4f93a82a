"""The one exception class for bad user input (imported by every layer of the package)."""


class ConfigError(ValueError):
    """Bad user input. The message is one line, meant for stderr."""
