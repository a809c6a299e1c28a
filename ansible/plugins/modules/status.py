#!/usr/bin/python
"""vmsnapshot.fleet.status: a host's last vmsnapshot runs as facts.

Runs on the managed host, whose Python may be older than the controller's
(RHEL 8's platform-python is 3.6): no `from __future__ import annotations`.
"""
import json

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: status
short_description: the last vmsnapshot runs of a host, as facts
description:
  - Runs C(vmsnapshot status --json -n COUNT) on the host and returns its
    reports (its C(runs), newest first) as the fact C(vmsnapshot_runs), and the newest as
    C(vmsnapshot_last_run), for fleet-wide reporting.
  - Changes nothing on the host.
options:
  count:
    description: how many of the last runs to return
    type: int
    default: 10
  executable:
    description: the vmsnapshot command on the host
    type: path
    default: /usr/sbin/vmsnapshot
author:
  - vmsnapshot developers
"""

EXAMPLES = r"""
- name: Last runs of every host
  vmsnapshot.fleet.status:
    count: 5

- name: Hosts whose last run was below filesystem
  ansible.builtin.debug:
    msg: "{{ inventory_hostname }}: {{ vmsnapshot_last_run.consistency }}"
  when: vmsnapshot_last_run is not none
        and vmsnapshot_last_run.consistency in ['crash', 'failed']
"""

RETURN = r"""
ansible_facts:
  description: the facts set
  returned: success
  type: dict
  contains:
    vmsnapshot_runs:
      description: the status reports of the last runs, newest first
      type: list
      elements: dict
    vmsnapshot_last_run:
      description: the newest report, or null when there was no run
      type: dict
"""


def main() -> None:
    module = AnsibleModule(
        argument_spec={"count": {"type": "int", "default": 10},
                       "executable": {"type": "path",
                                      "default": "/usr/sbin/vmsnapshot"}},
        supports_check_mode=True)
    count = module.params["count"]
    if count < 1:
        module.fail_json(msg="count must be at least 1 (got %d)" % count)
    argv = [module.params["executable"], "status", "--json", "-n", str(count)]
    rc, out, err = module.run_command(argv)
    try:
        printed = json.loads(out)
    except ValueError:
        printed = None
    # `status --json` prints {"runs": [...]}, and exits 1 when the history
    # is empty; a bare list is accepted too.
    runs = printed.get("runs") if isinstance(printed, dict) else printed
    if not isinstance(runs, list) or rc not in (0, 1):
        if rc not in (0, 1) or printed is None:
            hint = ("this vmsnapshot has no `status` command: upgrade it"
                    if "invalid choice" in err else
                    "see the error above; `vmsnapshot status` must work there")
            module.fail_json(msg="%s: exit %d: %s (%s)" % (
                " ".join(argv), rc, err.strip()[-500:], hint), rc=rc)
        module.fail_json(msg="%s printed %s, not {\"runs\": [reports]}"
                         % (" ".join(argv), type(printed).__name__))
    module.exit_json(changed=False, ansible_facts={
        "vmsnapshot_runs": runs,
        "vmsnapshot_last_run": runs[0] if runs else None})


if __name__ == "__main__":
    main()
