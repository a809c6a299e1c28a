"""Which filesystems a run freezes, and in what order: the mount table
(mountinfo), the plan (eligibility, include/exclude) and the waves (a
filesystem backed by a file on another freezes before it)."""
