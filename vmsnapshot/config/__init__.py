"""Configuration: one loader per format (native TOML, Azure plugin host INI,
Azure script plugin JSON), all producing the records of ``model``."""
from __future__ import annotations

from vmsnapshot.config.model import Config, FreezeSettings, Plugin
from vmsnapshot.config.search import (
    CONF_D, NATIVE_PATH, PLUGINHOST_PATH, SCRIPT_PLUGIN_PATH, SEARCH_ORDER,
    InvalidConfig, config_file, found_configs, load_config, read_sources,
    validate_config)

__all__ = [
    "Config", "FreezeSettings", "Plugin", "InvalidConfig", "load_config",
    "validate_config", "config_file", "found_configs", "SEARCH_ORDER",
    "NATIVE_PATH", "PLUGINHOST_PATH", "SCRIPT_PLUGIN_PATH", "CONF_D",
    "read_sources",
]
