"""One snapshot cycle: the whole cycle in one process (whole, for `run`),
the holder that keeps a split cycle alive between `pre` and `post`, and what
both share: lock, signals, snapshot step, outcomes, policy and the report."""
