"""How each backup agent calls its scripts, emulated faithfully enough to
test the adapters (facts in ../shared/platforms.md, checked against the
agents' published code where cited).

Each function runs a script as its agent does and returns what the agent
would conclude; none of them reads anything else the script leaves behind.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

# A bound on waiting for a script's pipes to reach EOF after it exited:
# an agent waits forever; a test must not.
EOF_GRACE_S = 30.0


@dataclass(frozen=True)
class AgentResult:
    returncode: Optional[int]   # None: the agent gave up waiting (timeout)
    verdict: str                # the agent's own word for the outcome
    output: bytes = b""
    eof_wait_s: float = 0.0     # how long the pipes stayed open after exit
    pid: int = 0                # the process the agent started


def _drain(proc: subprocess.Popen, started: float
           ) -> "tuple[bytes, float]":
    """Read stdout+stderr to EOF as agents do; fail the test when something
    the script left running keeps them open."""
    exited = time.monotonic()
    try:
        out, err = proc.communicate(timeout=EOF_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(
            "the script exited but its output pipes stayed open for %.0f s: "
            "something it started inherited them" % EOF_GRACE_S)
    return (out or b"") + (err or b""), time.monotonic() - exited


def azure_plugin_host(config_path: str, phase: str, env: Dict[str, str],
                      poll_s: float = 1.0) -> AgentResult:
    """Microsoft's VMBackup ScriptRunner (Azure/azure-linux-extensions,
    VMBackup/main/ScriptRunner.py): `sh LOCATION PARAM...` with stdout and
    stderr on pipes it never reads, polled every ScriptsExecutionPoll
    seconds until timeoutInSeconds; a timed-out script is left running and
    a "retry" only loops again on the same finished process. Exit 0 and 2
    (PrePost_ScriptStatus_Warning) count as success."""
    with open(config_path, encoding="utf-8") as f:
        cfg = json.load(f)
    argv = ["sh", cfg[phase + "ScriptLocation"]] + [
        str(p) for p in cfg.get(phase + "ScriptParams", [])]
    timeout = float(cfg.get("timeoutInSeconds", 30))
    polls = timeout / poll_s
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env)
    count = 0
    while proc.poll() is None:
        if count >= polls:
            # Left running, never killed: the test reaps it.
            proc.kill()
            proc.wait()
            return AgentResult(None, "timeout")
        count += 1
        time.sleep(poll_s)
    for pipe in (proc.stdout, proc.stderr):
        pipe.close()
    ok = proc.returncode in (0, 2)
    return AgentResult(proc.returncode, "success" if ok else "failed")


def google_agent(script: str, disks: str, env: Dict[str, str],
                 timeout_s: float = 60) -> AgentResult:
    """google-guest-agent's snapshot handler: SCRIPT DISKS with output on
    pipes it reads to EOF and discards; at the timeout it SIGKILLs only the
    script, then still waits for EOF; past the deadline the answer is 124
    whatever the script returned."""
    started = time.monotonic()
    proc = subprocess.Popen([script, disks], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)   # the script only, not its group
        proc.wait()
    out, eof_wait = _drain(proc, started)
    rc = proc.returncode
    if time.monotonic() - started > timeout_s:
        return AgentResult(124, "SCRIPT_TIMED_OUT", out, eof_wait, proc.pid)
    verdict = {0: "NO_ERROR", 124: "SCRIPT_TIMED_OUT"}.get(
        rc, "UNHANDLED_SCRIPT_ERROR")
    return AgentResult(rc, verdict, out, eof_wait, proc.pid)


def vmware_tools(scripts_dir: str, op: str, env: Dict[str, str]
                 ) -> List[AgentResult]:
    """open-vm-tools vmbackup: every executable of backupScripts.d with OP,
    alphabetical for freeze, reverse for thaw/freezeFail; a failing freeze
    script stops the quiesce."""
    names = sorted(n for n in os.listdir(scripts_dir)
                   if os.access(os.path.join(scripts_dir, n), os.X_OK))
    if op != "freeze":
        names.reverse()
    results = []
    for name in names:
        proc = subprocess.Popen([os.path.join(scripts_dir, name), op],
                                stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=env)
        out, eof_wait = _drain(proc, time.monotonic())
        rc = proc.wait()
        results.append(AgentResult(rc, "ok" if rc == 0 else "failed", out,
                                   eof_wait))
        if rc != 0 and op == "freeze":
            break
    return results


def qemu_ga_hook(script: str, op: str, env: Dict[str, str]) -> AgentResult:
    """qemu-ga's fsfreeze hook: stdin, stdout and stderr are /dev/null."""
    rc = subprocess.run([script, op], stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                        env=env, timeout=120).returncode
    return AgentResult(rc, "ok" if rc == 0 else "failed")


def shell_runner(argv: Sequence[str], env: Dict[str, str],
                 timeout_s: float = 300) -> AgentResult:
    """SSM's aws:runShellScript and Veeam's job scripts: run, capture the
    output to EOF, non-zero = failure, bounded by the step's timeout."""
    started = time.monotonic()
    proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, start_new_session=True)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return AgentResult(None, "TimedOut")
    out, eof_wait = _drain(proc, started)
    rc = proc.returncode
    return AgentResult(rc, "Success" if rc == 0 else "Failed", out, eof_wait)
