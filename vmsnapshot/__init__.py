"""vmsnapshot: application-consistent snapshots of Linux machines."""

__version__ = "0.1.0"
