"""syncwatch: know that a data sync has gone stale or broken before your customers do."""

__version__ = "0.1.0"
