"""Flower's SecAgg+ on the gptfl-secure task (see ../pyproject.toml)."""
