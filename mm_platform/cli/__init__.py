"""The `mm` command: one module per area of commands."""

from mm_platform.cli.main import main

__all__ = ["main"]
