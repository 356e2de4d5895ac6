"""Keep a host's GitLab runners registered and its config.toml correct."""

__version__ = "0.1.0"
