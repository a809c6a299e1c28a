"""`vmsnapshot hook freeze|thaw`: qemu-guest-agent's fsfreeze hook.

qemu-ga runs its hook with ``freeze`` before it freezes every filesystem
itself and with ``thaw`` after it thawed them (libvirt's and Proxmox's
"quiesce"), with stdin/stdout/stderr on /dev/null. That is the split cycle
with the agent freezing: ``freeze`` is ``pre --no-freeze`` (0: qemu-ga may
freeze; 3: the policy refuses, qemu-ga tells the host) and ``thaw`` is
``post`` (exit status as ``run``; 0 when no freeze hook is pending).
"""
from __future__ import annotations

from typing import Optional

from vmsnapshot.commands.split import post_command, pre_command


def hook_command(action: str, config_path: Optional[str]) -> int:
    if action == "freeze":
        return pre_command(config_path, (), (), None, no_freeze=True,
                           trigger="hook")
    if action == "thaw":
        return post_command(failed=False, json_output=True, lenient=True)
    raise ValueError(action)
