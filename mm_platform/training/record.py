"""What `mm train` produces before and after logging: trials, their results, the record."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from mm_platform.project.config import Project


@dataclass(frozen=True)
class Trial:
    """One candidate configuration: an estimator and one point of its search space."""

    candidate: str
    estimator: str
    params: dict[str, Any]
    index: int  # position of the candidate in the project file


@dataclass
class TrialResult:
    """What cross-validation said of one trial (or why it failed), and when."""

    trial: Trial
    scores: dict[str, float]
    error: str | None
    start_ms: int
    end_ms: int


@dataclass(frozen=True)
class TrainResult:
    """The outcome of one `mm train`: the chosen model, its scores and where it is registered."""

    project: str
    task: str
    run_id: str
    experiment_id: str
    candidate: str
    params: dict[str, Any]
    selection_metric: str
    cv_score: float
    holdout: dict[str, float]
    version: str
    alias: str | None  # None: registered without one (a late re-log, see Attempt.register)
    n_trials: int
    n_failed: int
    dataset_digest: str
    tracking_uri: str

    @property
    def key_metric(self) -> tuple[str, float]:
        """The holdout value of the selection metric."""
        name = f"holdout_{self.selection_metric}"
        return name, self.holdout[name]


@dataclass
class TrainRecord:
    """A finished search and refit, not yet logged: what `mm train` logs and `mm relog`
    logs again. `attempt` keys every write, so logging it twice writes it once."""

    project: Project
    attempt: str
    data_name: str
    data_source: str
    target: str
    X_train: pd.DataFrame
    X_hold: pd.DataFrame
    y_train: pd.Series
    y_hold: pd.Series
    results: list[TrialResult]
    best: int  # index into results
    pipeline: Any
    metrics: dict[str, float]
    size_metrics: dict[str, float]  # n_params, n_nonzero
    history: dict[str, list[float]]
    artifacts: dict[str, bytes]
    start_ms: int
    end_ms: int
    # where the first logging pass went: a re-log goes to the same store, experiment and
    # outer run, or it would start a second set of runs
    tracking_uri: str | None = None
    experiment_id: str | None = None
    outer_run_id: str | None = None
    kept_in: str | None = None  # the pending folder, once kept
    engine: str = "pandas"  # where the CV fits ran: the parent run's mm.engine tag

    @property
    def best_result(self) -> TrialResult:
        """The trial the search chose."""
        return self.results[self.best]

    @property
    def n_failed(self) -> int:
        """How many trials failed to fit."""
        return sum(r.error is not None for r in self.results)


def now_ms() -> int:
    """Wall-clock time in milliseconds, as MLflow stamps runs."""
    return int(time.time() * 1000)
