"""Configuration: the pydantic models of hub.yaml and their loader."""
from .loader import ConfigError, load_config, read_env_file, render_template, sandbox_config
from .models import HubConfig

__all__ = ["ConfigError", "HubConfig", "load_config", "read_env_file", "render_template", "sandbox_config"]
