"""The replicator: a desired-state controller for multi-cloud identity and access."""

__version__ = "0.1.0"
