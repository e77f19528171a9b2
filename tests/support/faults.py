"""Holding an `mm` subprocess at a named step (`mm_platform.faults`), for fault tests."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from mm_platform.faults import ENV_DIR, ENV_STEP


class Pause:
    """A step the process started with `env` stops at until `release` (once)."""

    def __init__(self, folder: Path, step: str) -> None:
        self.folder = folder
        self.step = step
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def env(self) -> dict[str, str]:
        return {ENV_STEP: self.step, ENV_DIR: str(self.folder)}

    def wait(self, process: subprocess.Popen, timeout: float = 180) -> None:
        """Return once `process` is held at the step; fail if it ends or never gets there."""
        deadline = time.monotonic() + timeout
        while not self.held():
            if process.poll() is not None:
                raise AssertionError(f"the process ended (code {process.returncode}) before "
                                     f"{self.step}: {process.communicate()[1]}")  # fmt: skip
            if time.monotonic() > deadline:
                raise AssertionError(f"the process did not reach {self.step} in {timeout:g} s")
            time.sleep(0.05)

    def held(self) -> bool:
        """Whether the process has reached the step (and is held there until `release`)."""
        return (self.folder / f"{self.step}.paused").exists()

    def release(self) -> None:
        """Let the held process go on."""
        (self.folder / f"{self.step}.go").touch()
