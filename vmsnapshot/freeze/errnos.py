"""What each FIFREEZE / FITHAW errno means: the freeze's one errno policy.

The C core records the errno of every ioctl and judges none; this table is
the only place that says what an errno means for the run (the native door,
the freeze session and the report rows all ask it).
"""
from __future__ import annotations

import enum
import errno
import os
from typing import Dict, Optional

from vmsnapshot.frozenrecord import frozen_record
from vmsnapshot.errors import Catalogue


class Meaning(enum.Enum):
    """What a failed FIFREEZE says about the mount."""

    FROZEN_BY_ANOTHER = "frozen by another process"
    CANNOT_FREEZE = "cannot be frozen"
    FAILED = "failed"


@frozen_record
class Rule:
    """One errno's meaning, its catalogue entry (None: no error of its
    own, the mount is skipped and said so) and the report's wording."""

    meaning: Meaning
    entry: Optional[Catalogue]
    text: str    # %(path)s and %(reason)s are filled in


_FAILED = Rule(Meaning.FAILED, Catalogue.FS_FREEZE_FAILED,
               "%(path)s: FIFREEZE failed: %(reason)s")

FREEZE: Dict[int, Rule] = {
    # Already frozen. The plan freezes each superblock once, so this is
    # someone else's freeze: reported, and never thawed by us.
    errno.EBUSY: Rule(Meaning.FROZEN_BY_ANOTHER,
                      Catalogue.FROZEN_BY_ANOTHER_PROCESS,
                      "%(path)s was already frozen by another process; "
                      "left frozen"),
    # The filesystem has no freeze support (vfat, tmpfs...): nothing to
    # freeze, skip it and say so; no error of its own.
    errno.EOPNOTSUPP: Rule(Meaning.CANNOT_FREEZE, None,
                           "%(path)s: this filesystem cannot be frozen; "
                           "skipped"),
    # Old kernels and some FUSE mounts do not know the ioctl at all.
    errno.ENOTTY: Rule(Meaning.CANNOT_FREEZE, None,
                       "%(path)s: this filesystem cannot be frozen; "
                       "skipped"),
    # FIFREEZE needs CAP_SYS_ADMIN in the initial user namespace.
    errno.EPERM: Rule(Meaning.FAILED, Catalogue.FS_FREEZE_FAILED,
                      "%(path)s: FIFREEZE failed: %(reason)s (needs root "
                      "in the host's user namespace)"),
    # The superblock is going away (unmount in progress), or a read-only
    # filesystem the kernel refuses: not frozen, nothing to thaw.
    errno.EINVAL: _FAILED,
    # The fd was no mount fd (the caller's bug, caught before FIFREEZE).
    errno.EBADF: _FAILED,
    errno.ENOTDIR: _FAILED,
    # The guardian record before FIFREEZE could not be sent: the run
    # refuses to freeze unwatched (EPIPE, ECONNRESET, EAGAIN...).
    errno.EPIPE: Rule(Meaning.FAILED, Catalogue.FS_FREEZE_FAILED,
                      "%(path)s: not frozen: the guardian process is gone "
                      "(%(reason)s)"),
}
# Anything else (EIO, ENOSPC from the sync, ...): failed, not frozen.


def freeze_rule(err: int) -> Rule:
    """The rule for a failed FIFREEZE's errno (err != 0)."""
    return FREEZE.get(err, _FAILED)


def freeze_text(path: str, err: int) -> str:
    return freeze_rule(err).text % {"path": path,
                                    "reason": os.strerror(err)}


def frozen_by_another(freeze_errno: int) -> bool:
    return (freeze_errno != 0 and freeze_rule(freeze_errno).meaning
            is Meaning.FROZEN_BY_ANOTHER)


# FITHAW on a mount this run froze (one attempt: retrying could thaw a
# freeze that is not ours):
#   0      -- thawed by us.
#   EINVAL -- it was not frozen any more: somebody else thawed it
#             (fsfreeze -u) before our thaw; the snapshot was not taken
#             under our freeze. ThawedByAnotherProcess, not a thaw failure.
#   other  -- the thaw failed (EIO...): FsFreezeFailed, the mount may still
#             be frozen.
def thawed_by_another(thaw_errno: int) -> bool:
    return thaw_errno == errno.EINVAL


def thaw_failed(thaw_errno: int) -> bool:
    return thaw_errno != 0 and not thawed_by_another(thaw_errno)


def thaw_text(path: str, err: int) -> str:
    return "%s: thaw failed: %s" % (path, os.strerror(err))
