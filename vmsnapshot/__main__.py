from vmsnapshot.cli import entry

entry()
