"""The error catalogue (names and codes from the Azure extension) and the
exception hierarchy that carries it.

Every expected failure is a :class:`VmsnapshotError` whose ``entry`` is one
row of the catalogue; the report and ``check`` print name, code, message and
recommended action from it, so users find the same words as in Azure's
troubleshooting table.
"""
from __future__ import annotations

import enum
from typing import Any, Dict, Optional

from vmsnapshot.frozenrecord import frozen_record


class Catalogue(enum.Enum):
    """name -> (code, recommended action). Names and codes are a contract."""

    PRE_SCRIPT_EXECUTION_FAILED = (
        "Pre-ScriptExecutionFailed", 300,
        "The pre-script exited with an error. Run it by hand as root and fix "
        "what it reports; its last output lines are in the log.")
    POST_SCRIPT_EXECUTION_FAILED = (
        "Post-ScriptExecutionFailed", 301,
        "The post-script exited with an error. Run it by hand as root and fix "
        "what it reports; the application may still be quiesced.")
    PRE_SCRIPT_NOT_FOUND = (
        "Pre-ScriptNotFound", 302,
        "Make sure the pre-script exists at the path given in the "
        "configuration (preScriptLocation / pre).")
    POST_SCRIPT_NOT_FOUND = (
        "Post-ScriptNotFound", 303,
        "Make sure the post-script exists at the path given in the "
        "configuration (postScriptLocation / post).")
    INCORRECT_PLUGINHOST_FILE = (
        "IncorrectPluginhostFile", 304,
        "Fix /etc/azure/VMSnapshotPluginHost.conf: section [pre_post] with "
        "numberOfPlugins and pluginName<i>/pluginPath<i>/pluginConfigPath<i>; "
        "owner root, mode 600.")
    INCORRECT_JSON_CONFIG_FILE = (
        "IncorrectJSONConfigFile", 305,
        "Fix the configuration file named in the message (valid syntax, the "
        "documented keys and types; owner root, mode 600), then run "
        "'vmsnapshot check'.")
    INSUFFICIENT_PERMISSION_FOR_PRE_SCRIPT = (
        "InsufficientPermissionforPre-Script", 306,
        "Make the pre-script and every directory above it owned by root and "
        "not writable by others: chown root:root SCRIPT; chmod 700 SCRIPT.")
    INSUFFICIENT_PERMISSION_FOR_POST_SCRIPT = (
        "InsufficientPermissionforPost-Script", 307,
        "Make the post-script and every directory above it owned by root and "
        "not writable by others: chown root:root SCRIPT; chmod 700 SCRIPT.")
    PRE_SCRIPT_TIMEOUT = (
        "Pre-ScriptTimeout", 308,
        "The pre-script did not finish in time. Raise timeoutInSeconds / "
        "timeout, or make the script faster.")
    POST_SCRIPT_TIMEOUT = (
        "Post-ScriptTimeout", 309,
        "The post-script did not finish in time. Raise timeoutInSeconds / "
        "timeout, or make the script faster.")
    FS_FREEZE_FAILED = (
        "FsFreezeFailed", 121,
        "A filesystem could not be frozen (see the mount's error). Exclude it "
        "with --exclude / [freeze] exclude if it cannot be frozen.")
    FS_FREEZE_TIMEOUT = (
        "FsFreezeTimeout", 122,
        "The watchdog thawed the filesystems before the snapshot finished. "
        "Raise [freeze] timeout / --freeze-timeout, or make the snapshot "
        "faster; this snapshot is only crash-consistent.")
    UNABLE_TO_OPEN_MOUNT = (
        "UnableToOpenMount", 123,
        "The mount point could not be opened (unmounted or inaccessible). "
        "Check that it is mounted, or exclude it.")
    FREEZE_MODULE_MISSING = (
        "FreezeModuleMissing", 124,
        "The native freeze module vmsnapshot._freeze is missing or broken. "
        "Reinstall the vmsnapshot package (or run 'make build' in a source "
        "tree).")
    FROZEN_BY_ANOTHER_PROCESS = (
        "FrozenByAnotherProcess", 125,
        "Another process froze this filesystem and vmsnapshot left it so. "
        "Find who froze it (another backup agent?) and let it finish, or "
        "'fsfreeze -u MOUNTPOINT' if it was left frozen by mistake.")
    SNAPSHOT_COMMAND_FAILED = (
        "SnapshotCommandFailed", 126,
        "The snapshot command failed or could not be started. Run it by hand "
        "and fix what it reports.")
    RUN_INTERRUPTED = (
        "RunInterrupted", 128,
        "vmsnapshot was stopped by a signal (SIGTERM/SIGINT/SIGHUP); it "
        "thawed and ran the post-scripts. Take the snapshot again.")
    STALE_FREEZE_STATE = (
        "StaleFreezeState", 129,
        "A previous run was killed while filesystems were frozen. Run "
        "'vmsnapshot thaw --recover' to thaw what it froze, then try again.")
    NOTHING_FROZEN = (
        "NothingFrozen", 130,
        "Freezing is enabled but no selected filesystem could be frozen "
        "(an include or --mount that matches nothing, or only filesystems "
        "that cannot freeze). Run 'vmsnapshot check' to see the mount plan "
        "and fix [freeze] include / --mount, or disable freezing on purpose.")
    THAWED_BY_ANOTHER_PROCESS = (
        "ThawedByAnotherProcess", 131,
        "Another process thawed a filesystem vmsnapshot had frozen before "
        "the snapshot finished (fsfreeze -u, another backup agent?); this "
        "snapshot is only crash-consistent. Find and stop that process.")
    CONFIG_CONFLICT = (
        "ConfigConflict", 132,
        "Two configuration sources disagree, or two plugins share a name. "
        "Run 'vmsnapshot check' to see where each setting comes from and "
        "keep one.")
    ALREADY_RUNNING = (
        "AlreadyRunning", 127,
        "Another vmsnapshot run holds the lock. Wait for it to finish; if "
        "none is running, check /run/vmsnapshot and run "
        "'vmsnapshot thaw --recover'.")

    @property
    def error_name(self) -> str:
        return self.value[0]

    @property
    def code(self) -> int:
        return self.value[1]

    @property
    def action(self) -> str:
        return self.value[2]

    @classmethod
    def by_name(cls, name: str) -> "Catalogue":
        for entry in cls:
            if entry.error_name == name:
                return entry
        raise KeyError(name)


@frozen_record
class ErrorRecord:
    """One error as it appears in the status report."""

    entry: Catalogue
    message: str

    def to_json(self) -> Dict[str, Any]:
        return {"name": self.entry.error_name, "code": self.entry.code,
                "message": self.message, "action": self.entry.action}

    def __str__(self) -> str:
        return "%s (%d): %s\n  action: %s" % (
            self.entry.error_name, self.entry.code, self.message,
            self.entry.action)


class VmsnapshotError(Exception):
    """Root of every expected failure; carries its catalogue entry."""

    entry: Catalogue = Catalogue.FS_FREEZE_FAILED

    def __init__(self, message: str, entry: Optional[Catalogue] = None):
        super().__init__(message)
        if entry is not None:
            self.entry = entry
        self.message = message

    def record(self) -> ErrorRecord:
        return ErrorRecord(self.entry, self.message)


class ConfigError(VmsnapshotError):
    entry = Catalogue.INCORRECT_JSON_CONFIG_FILE


class TrustError(VmsnapshotError):
    entry = Catalogue.INSUFFICIENT_PERMISSION_FOR_PRE_SCRIPT


class ScriptError(VmsnapshotError):
    entry = Catalogue.PRE_SCRIPT_EXECUTION_FAILED


class FreezeError(VmsnapshotError):
    entry = Catalogue.FS_FREEZE_FAILED


# The pre/post entry mapping: each phase's script errors.

@frozen_record
class PhaseEntries:
    """The catalogue entries of one phase's script errors."""

    not_found: Catalogue
    no_permission: Catalogue
    failed: Catalogue
    timeout: Catalogue


_PHASES = {
    "pre": PhaseEntries(Catalogue.PRE_SCRIPT_NOT_FOUND,
                        Catalogue.INSUFFICIENT_PERMISSION_FOR_PRE_SCRIPT,
                        Catalogue.PRE_SCRIPT_EXECUTION_FAILED,
                        Catalogue.PRE_SCRIPT_TIMEOUT),
    "post": PhaseEntries(Catalogue.POST_SCRIPT_NOT_FOUND,
                         Catalogue.INSUFFICIENT_PERMISSION_FOR_POST_SCRIPT,
                         Catalogue.POST_SCRIPT_EXECUTION_FAILED,
                         Catalogue.POST_SCRIPT_TIMEOUT),
}


def phase_entries(phase: str) -> PhaseEntries:
    try:
        return _PHASES[phase]
    except KeyError:
        raise ValueError("phase must be 'pre' or 'post', not %r"
                         % (phase,)) from None
