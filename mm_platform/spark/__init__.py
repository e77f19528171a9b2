"""The scale-out engine's Spark session: one per process, from the project's `spark:` section.

Importing this package imports no PySpark; `session()` does, and turns a missing PySpark or
Java, or an unreachable master, into one line with the fix (`SparkUnavailable`).
"""

from mm_platform.spark.session import (
    SparkUnavailable,
    master_of,
    session,
    settings_of,
    spark_error,
)

__all__ = ["SparkUnavailable", "master_of", "session", "settings_of", "spark_error"]
