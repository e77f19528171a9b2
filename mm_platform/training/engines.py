"""Where `mm train`'s cross-validation fits run: in this process (`pandas`, the default) or
as Spark tasks on executors, through joblib's Spark backend (`joblibspark`).

The engine decides only where a fit runs, never what it computes: the folds are split on
the driver, the estimators are seeded by the project, and every fold is fitted and scored
by the same scikit-learn code, so both engines give the same scores and the same winner.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from mm_platform.spark import SparkUnavailable, master_of, session, spark_error

if TYPE_CHECKING:
    from mm_platform.project.config import Project

T = TypeVar("T")

ENGINES = ("pandas", "spark")
DEFAULT_ENGINE = "pandas"
_INSTALL = 'pip install -e ".[spark]" (or pip install joblibspark)'


def check_engine(engine: str) -> str:
    """`engine` if it is one `mm train` knows, ValueError otherwise."""
    if engine not in ENGINES:
        raise ValueError(
            f"The 'engine' parameter of train_project must be one of {', '.join(ENGINES)}. "
            f"Got {engine!r} instead."
        )
    return engine


def start_spark(project: Project) -> str:
    """Start (or reuse) the project's Spark session and register joblib's Spark backend;
    the master the fits will run on. SparkUnavailable, one line, when Spark cannot start."""
    spark = session(project.spark)
    _register_backend()
    return master_of(spark, project.spark)


def _register_backend() -> None:
    """joblib's `spark` backend, registered (again: it is cheap) for this process."""
    try:
        from joblibspark import register_spark
    except ImportError as exc:
        raise SparkUnavailable(
            f"the Spark search needs joblibspark, which is not installed: {_INSTALL}"
        ) from exc
    register_spark()


def run_on_spark(calls: Sequence[Callable[[], T]], master: str) -> list[T]:
    """Run every call as a Spark task on `master`, as many at once as the cluster runs;
    their results in order. A call must return its own errors, not raise them: a Spark
    task that fails (a call that raised, a worker that crashed, an executor that could not
    import the call's modules) stops them all, with SparkUnavailable."""
    import joblib

    _register_backend()
    with warnings.catch_warnings():
        # joblibspark warns that local mode has no stage-level scheduling: true, harmless
        warnings.simplefilter("ignore", UserWarning)
        with joblib.parallel_config(backend="spark", n_jobs=-1):
            parallel = joblib.Parallel()
            try:
                return list(parallel(joblib.delayed(call)() for call in calls))
            except Exception as exc:
                raise _task_failed(master, exc) from exc


def _task_failed(master: str, exc: Exception) -> SparkUnavailable:
    # joblibspark 0.6 hands joblib a failed Spark job as a result, which joblib then fails
    # to unpack (a TypeError): the job's own reason is in the Spark log, not in `exc`
    reason = "" if isinstance(exc, TypeError) else f" ({spark_error(exc)})"
    return SparkUnavailable(
        f"a Spark task of the search failed on {master}{reason}: a Python worker crashed, "
        "an executor was lost, or the executors lack mm_platform (install it on every "
        "node); see the Spark log above"
    )
