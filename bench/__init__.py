"""Freeze benchmark: vmsnapshot's parallel freeze against sequential peers.

Run as root from the repository root: ``python3 -m bench`` (see README.md).
"""
