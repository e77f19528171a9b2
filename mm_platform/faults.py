"""Fault injection for the tests: hold this process at a named step, so a test can break
something (kill the tracking server) at exactly that moment, however loaded the machine.

Off unless `MM_FAULT_PAUSE_AT` names a step: then the first time the process reaches it,
it creates `<MM_FAULT_DIR>/<step>.paused` and waits until `<step>.go` appears there.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

logger = logging.getLogger(__name__)

ENV_STEP = "MM_FAULT_PAUSE_AT"
ENV_DIR = "MM_FAULT_DIR"


def pause_point(step: str) -> None:
    """Wait here when `MM_FAULT_PAUSE_AT` is `step` (once: the marker stays); else return."""
    if os.environ.get(ENV_STEP) != step:
        return
    folder = Path(os.environ.get(ENV_DIR) or ".")
    paused, go = folder / f"{step}.paused", folder / f"{step}.go"
    if paused.exists():
        return  # held here once already
    paused.touch()
    logger.info("fault injection: paused at %s until %s exists", step, go)
    while not go.exists():
        time.sleep(0.01)
