"""Where results go after a run (design.md, "Where results go")."""
from vmsnapshot.results.publishing import internal_error, publish

__all__ = ["publish", "internal_error"]
