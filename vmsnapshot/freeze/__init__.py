"""Freezing and thawing: the door to the C core (native), a run's freeze
session, the guardian process that thaws if the run dies, the state file and
recovery, presync, and opening a mount point safely (mountfd)."""
