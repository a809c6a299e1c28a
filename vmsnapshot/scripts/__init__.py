"""Applications' pre- and post-scripts: starting a trusted script in its own
process group and cgroup (spawn, cgroup), one-shot phases (oneshot) and
pre-scripts held open across the freeze (held)."""
