"""The `spark:` section of a project file: where the scale-out engine runs.

Used only by commands run with `--engine spark` (or `monitoring.engine: spark`); the pandas
engine, the default, never reads it. `MM_SPARK_MASTER` and `MM_SPARK_CONF` override it.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from mm_platform.project.base import StrictModel

_MASTER = re.compile(
    r"^(local(\[(\*|[1-9]\d*)(,\s*[1-9]\d*)?\])?|spark://\S+|yarn|k8s://\S+|sc://\S+)$"
)


def check_master(value: str) -> str:
    """`value` if it names a Spark master, ValueError naming the accepted forms otherwise."""
    if not _MASTER.match(value.strip()):
        raise ValueError(
            f"'{value}' is not a Spark master; use local[N], local[*], spark://HOST:PORT, "
            "yarn, k8s://https://HOST:PORT or sc://HOST:PORT (Spark Connect)"
        )
    return value.strip()


class Spark(StrictModel):
    """A Spark master and configuration; the default runs Spark inside this process's JVM
    on every core, with the Spark UI off."""

    master: str = "local[*]"
    conf: dict[str, str | int | float | bool] = Field(default_factory=dict)
    app_name: str = Field("mm_platform", min_length=1, max_length=200)

    @field_validator("master")
    @classmethod
    def _check_master(cls, value: str) -> str:
        return check_master(value)

    @field_validator("conf")
    @classmethod
    def _check_conf(cls, value: dict[str, object]) -> dict[str, str]:
        for key in value:
            if not key.startswith("spark."):
                raise ValueError(f"conf key '{key}' is not a Spark setting (they start 'spark.')")
        # YAML reads `8` and `true` as numbers and booleans; Spark wants their text
        return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}
