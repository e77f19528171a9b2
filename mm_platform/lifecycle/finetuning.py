"""`mm finetune`: the champion refit on new labelled data, held near its own parameters.

The seed writes it as min_θ 1/m Σ L(y, ŷ; θ) + λ‖θ − θ₀‖², θ₀ the champion's parameters.
Preprocessing stays as fitted on the original data; only the model stage moves:

- linear regression: the closed form (ZᵀZ/m + λI) θ = Zᵀy/m + λθ₀ (intercept included);
- logistic regression: that objective with the log-loss, minimised by L-BFGS;
- MLP: warm-started Adam epochs on the new data, each followed by a decoupled pull toward
  θ₀ (θ ← θ − 2λ·lr·(θ − θ₀), the form of the penalty's gradient step, applied once per
  epoch rather than per mini-batch: λ is per epoch);
- tree ensembles (random forest, extra trees, gradient boosting, hist gradient boosting):
  `n_new_trees` trees added on the new data (warm start); λ does not apply.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mm_platform.clock import readable_stamp, utc_now
from mm_platform.data.sources import load_dataset
from mm_platform.data.splits import split_holdout
from mm_platform.errors import DataError, ProjectConfigError, TrackingError
from mm_platform.modeling.metrics import (
    PROBA_PREFIX,
    align_labels,
    class_scores,
    model_classes,
    positive_class,
    relative_change,
    score_predictions,
)
from mm_platform.serving.batch import (
    conform_file,
    input_spec,
    labelled_production,
    read_table,
    target_name,
)
from mm_platform.serving.predlog.writer import META
from mm_platform.tracking import tags

if TYPE_CHECKING:
    from mm_platform.project.config import Project


@dataclass(frozen=True)
class FinetuneResult:
    """The fine-tuned challenger and how it compares with its parent."""

    project: str
    parent_version: str
    version: str
    run_id: str
    n_rows: int
    lam: float
    metrics: dict[str, float]


def new_data(
    project: Project, schema: list[tuple[str, str]], *, data_path: Path | None,
    since: datetime | None, log_root: str,
) -> tuple[pd.DataFrame, pd.Series, str]:  # fmt: skip
    """The labelled rows to fine-tune on: a file, or production predictions joined with
    labels; features conformed to the model's signature (`schema`) as a served request is."""
    target = target_name(project)
    if data_path is not None:
        frame = read_table(data_path)
        source = str(data_path)
        if target not in frame.columns:
            raise DataError(
                f"{data_path}: fine-tuning data lacks the target column '{target}' "
                f"(columns: {list(frame.columns)})"
            )
    else:
        frame = labelled_production(project, log_root, since, part="fit")
        source = f"production since {since.isoformat() if since else 'the start'}"
        if len(frame) == 0:
            raise DataError(
                f"{project.name}: no labelled production data in {log_root}"
                + (f" since {since.isoformat()}" if since else "")
                + " outside the rows the promotion gate keeps for evaluation; ingest labels "
                "with mm labels, or pass --data FILE"
            )
        data_path = Path(log_root)
    y = frame[target]
    # the log's own columns are not inputs (ids and the target are accepted by conform)
    made = [c for c in frame.columns if c in (*META, "prediction") or c.startswith(PROBA_PREFIX)]
    X, _ = conform_file(data_path, frame.drop(columns=made), input_spec(project, schema))
    if y.isna().any():
        raise DataError(f"{data_path}: target '{target}' has {int(y.isna().sum())} missing values")
    return X.reset_index(drop=True), y.reset_index(drop=True), source


def refit(parent: Any, X: pd.DataFrame, y: pd.Series, lam: float, project: Project) -> Any:
    """A copy of the fitted pipeline with its model stage fine-tuned (see the module doc)."""
    model = parent.named_steps["model"]
    name = type(model).__name__
    if hasattr(model, "classes_"):
        unseen = set(pd.unique(y)) - set(model.classes_)
        if unseen:
            raise DataError(f"fine-tuning labels {sorted(unseen)} are not classes of the champion")
        if not name.startswith(("Logistic", "MLP")) and set(pd.unique(y)) != set(model.classes_):
            raise DataError(
                f"adding trees needs every class of the champion in the new data; "
                f"{sorted(set(model.classes_) - set(pd.unique(y)))} are missing"
            )
    if name.startswith("MLP") and model.solver not in ("adam", "sgd"):
        raise ProjectConfigError(
            f"{project.label}: fine-tuning an MLP continues its stochastic solver; the "
            f"champion uses solver '{model.solver}' (use adam or sgd)"
        )
    Z = parent[:-1].transform(X)
    tuned = copy.deepcopy(parent)
    step = tuned.named_steps["model"]
    spec = project.finetune
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if (
            name in ("LinearRegression", "Ridge", "Lasso", "ElasticNet")
            and np.ndim(model.coef_) == 1
        ):
            step.coef_, step.intercept_ = ridge_toward(Z, np.asarray(y, float), model, lam)
        elif name == "LogisticRegression":
            step.coef_, step.intercept_ = logistic_toward(Z, y, model, lam)
        elif name in ("MLPRegressor", "MLPClassifier"):
            _mlp_toward(step, Z, y, lam, spec.epochs)
        elif name in ("RandomForestRegressor", "RandomForestClassifier", "ExtraTreesRegressor",
                      "ExtraTreesClassifier", "GradientBoostingRegressor",
                      "GradientBoostingClassifier"):  # fmt: skip
            step.set_params(warm_start=True, n_estimators=step.n_estimators + spec.n_new_trees)
            step.fit(Z, y)
        elif name.startswith("HistGradientBoosting"):
            step.set_params(warm_start=True, max_iter=step.max_iter + spec.n_new_trees,
                            early_stopping=False)  # fmt: skip
            step.fit(Z, y)
        else:
            raise ProjectConfigError(
                f"{project.label}: fine-tuning supports linear, logistic, MLP and tree-ensemble "
                f"models; the champion is {name}"
            )
    return tuned


def ridge_toward(Z: np.ndarray, y: np.ndarray, model: Any, lam: float) -> tuple[Any, float]:
    m = len(Z)
    A = np.hstack([Z, np.ones((m, 1))])
    theta0 = np.append(np.asarray(model.coef_, float), float(model.intercept_))
    lhs = A.T @ A / m + lam * np.eye(A.shape[1])
    # lstsq: with λ = 0 and collinear columns (one-hot + intercept) lhs is singular
    theta = np.linalg.lstsq(lhs, A.T @ y / m + lam * theta0, rcond=None)[0]
    return theta[:-1], float(theta[-1])


def logistic_toward(Z: np.ndarray, y: pd.Series, model: Any, lam: float) -> tuple[Any, Any]:
    from scipy.optimize import minimize

    classes = list(model.classes_)
    unknown = set(pd.unique(y)) - set(classes)
    if unknown:
        raise DataError(f"fine-tuning labels {sorted(unknown)} are not classes of the champion")
    W0, b0 = np.asarray(model.coef_, float), np.asarray(model.intercept_, float)
    k, n = W0.shape
    index = np.searchsorted(classes, np.asarray(y))
    m = len(Z)
    # binary: sklearn keeps one row of weights for the second class
    target = (index == 1).astype(float) if k == 1 else np.eye(k)[index]

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        W, b = theta[: k * n].reshape(k, n), theta[k * n :]
        logits = Z @ W.T + b
        if k == 1:
            p = 1 / (1 + np.exp(-logits[:, 0]))
            loss = -np.mean(target * np.log(p + 1e-12) + (1 - target) * np.log(1 - p + 1e-12))
            residual = (p - target)[:, None]
        else:
            logits = logits - logits.max(axis=1, keepdims=True)
            P = np.exp(logits)
            P /= P.sum(axis=1, keepdims=True)
            loss = -np.mean(np.sum(target * np.log(P + 1e-12), axis=1))
            residual = P - target
        gW = residual.T @ Z / m + 2 * lam * (W - W0)
        gb = residual.mean(axis=0) + 2 * lam * (b - b0)
        penalty = lam * (np.sum((W - W0) ** 2) + np.sum((b - b0) ** 2))
        return loss + penalty, np.concatenate([gW.ravel(), gb])

    start = np.concatenate([W0.ravel(), b0])
    solution = minimize(objective, start, jac=True, method="L-BFGS-B")
    return solution.x[: k * n].reshape(k, n), solution.x[k * n :]


def _mlp_toward(model: Any, Z: np.ndarray, y: pd.Series, lam: float, epochs: int) -> None:
    anchors = [W.copy() for W in model.coefs_] + [b.copy() for b in model.intercepts_]
    model.early_stopping = False  # partial_fit cannot hold out data
    if getattr(model, "best_loss_", None) is None:  # trained with early stopping
        model.best_loss_ = np.inf
    pull = min(1.0, 2 * lam * model.learning_rate_init)
    for _ in range(epochs):
        model.partial_fit(Z, y)
        params = model.coefs_ + model.intercepts_
        for current, anchor in zip(params, anchors, strict=True):
            current -= pull * (current - anchor)


def finetune_project(
    project: Project,
    *,
    data_path: Path | None = None,
    since: datetime | None = None,
    lam: float | None = None,
    log_root: str,
) -> FinetuneResult:
    """Fine-tune the champion on new data, log the run, register the result as challenger."""
    from mm_platform import tracking

    lam = project.finetune.lam if lam is None else lam
    if not (math.isfinite(lam) and lam >= 0):
        raise ProjectConfigError(f"--lam must be a finite number >= 0, got {lam}")
    tracking.connect()
    champion = tracking.resolve_version(project.name)
    number = str(champion.version)
    uri = f"models:/{project.name}/{number}"
    if "sklearn" not in tracking.model_flavors(uri):
        raise TrackingError(
            f"{project.name} version {number} (the champion) is a compressed model; fine-tune "
            "a trained version (promote one, or mm train first)"
        )
    files = tracking.verify_model_files(project.name, number)
    parent = tracking.load_sklearn_model(files)
    X_new, y_new, source = new_data(
        project, tracking.input_schema(str(files)), data_path=data_path, since=since,
        log_root=log_root,
    )  # fmt: skip
    data = load_dataset(project)
    _, X_hold, _, y_hold = split_holdout(project, data)
    classes = model_classes(parent)
    if classes is not None:  # labels read from CSV/Parquet may not be the model's type
        y_new = align_labels(y_new, classes)
    tuned = refit(parent, X_new, y_new, lam, project)
    metrics = _compare(project, tuned, parent, (X_new, y_new), (X_hold, y_hold))
    lineage = {tags.PARENT_MODEL_VERSION: number, tags.PARENT_RUN_ID: champion.run_id or ""}
    params = {"lam": lam, "n_rows": len(X_new), "source": source, "parent_version": number}
    params.update(epochs=project.finetune.epochs, n_new_trees=project.finetune.n_new_trees)
    primary = project.selection.metric
    before, after = metrics[f"parent_holdout_{primary}"], metrics[f"holdout_{primary}"]
    description = (
        f"version {number} fine-tuned on {len(X_new)} rows ({source}), lambda={lam:g}; "
        f"holdout {primary} {before:.4g} -> {after:.4g}"
    )
    version, run_id = _log_finetune(
        project, tuned, (X_new, X_hold, y_hold), lineage, params, metrics, description
    )
    return FinetuneResult(project.name, number, version, run_id, len(X_new), lam, metrics)


def _compare(
    project: Project,
    tuned: Any,
    parent: Any,
    new: tuple[pd.DataFrame, pd.Series],
    holdout: tuple[pd.DataFrame, pd.Series],
) -> dict[str, float]:
    """Scores of the tuned model and its parent on the new rows and the holdout, their
    deltas and the forgetting (the relative holdout loss of the selection metric)."""
    task = project.task
    classes = model_classes(parent)
    pos_label = positive_class(classes, task)
    metrics: dict[str, float] = {}
    for prefix, model in (("", tuned), ("parent_", parent)):
        for name, (X, y) in (("new_", new), ("holdout_", holdout)):
            scores = class_scores(model, X, task)
            metrics.update(
                score_predictions(task, y, model.predict(X), scores, prefix + name, pos_label)
            )
    for key in [k for k in metrics if k.startswith("holdout_")]:
        metrics[f"delta_{key}"] = metrics[key] - metrics[f"parent_{key}"]
    primary = project.selection.metric
    if f"holdout_{primary}" not in metrics:
        raise DataError(
            f"{project.label}: {primary} cannot be computed on the holdout (e.g. one class only)"
        )
    before, after = metrics[f"parent_holdout_{primary}"], metrics[f"holdout_{primary}"]
    metrics["forgetting"] = relative_change(primary, before, after)
    return metrics


def _log_finetune(
    project: Project,
    tuned: Any,
    data: tuple[pd.DataFrame, pd.DataFrame, pd.Series],
    lineage: dict[str, str],
    params: dict[str, Any],
    metrics: dict[str, float],
    description: str,
) -> tuple[str, str]:
    """The fine-tune run with the model, its reference sample and its version as
    @challenger, through the outage-proof writer; returns (version, run id). `data` is
    (new X, holdout X, holdout y)."""
    from mm_platform import tracking
    from mm_platform.tracking.durable import write_command
    from mm_platform.tracking.tags import CHALLENGER, class_tags
    from mm_platform.training.search import REFERENCE_ARTIFACT, reference_sample

    X_new, X_hold, y_hold = data
    spec = _finetune_spec(project, reference_sample(project, tuned, X_hold, y_hold), lineage)
    spec.params, spec.metrics = params, metrics
    run_tags = spec.tags

    def write(log: Any) -> tuple[str, str]:
        run_id = log.write_run(spec, log.outer_run_id)
        log.step = "log the model"
        model_uri, model_id = log.write_model(
            run_id, params, lambda mid, rid: tracking.log_sklearn_model(
                tuned, X_new, model_id=mid, run_id=rid
            ),
        )  # fmt: skip
        metrics["size_bytes"] = float(tracking.artifact_size(model_uri))
        log.add(spec, metrics={"size_bytes": metrics["size_bytes"]})
        version_tags = {
            **run_tags,
            tags.REFERENCE_ARTIFACT: REFERENCE_ARTIFACT,
            **class_tags(tuned),
            **{
                f"mm.metric.{k}": f"{v:.6g}"
                for k, v in metrics.items()
                if k.startswith("holdout_") or k == "size_bytes"
            },
        }
        log.step = f"register a version of model '{project.name}'"
        version, _ = log.register(
            project.name,
            run_id=run_id,
            model_uri=model_uri,
            model_id=model_id,
            alias=CHALLENGER,
            tags={**version_tags, tags.SOURCE_RUN_ID: run_id},
            description=description,
        )
        log.step = "finish the run"
        log.end_run(spec)
        return version, run_id

    return write_command(project.name, write, what="the fine-tuned model")


def _finetune_spec(project: Project, reference: pd.DataFrame, lineage: dict[str, str]) -> Any:
    """The fine-tune run's RunSpec: name, tags, times, the reference sample and the
    performance estimator fitted on it."""
    from mm_platform.tracking.durable import RunSpec
    from mm_platform.training.artifacts import reference_artifacts

    now = utc_now()
    return RunSpec(
        part="finetune",
        name=f"finetune/{readable_stamp(now)}",
        tags={tags.RUN_TYPE: "finetune", tags.PROJECT: project.name, **lineage},
        start_ms=int(now.timestamp() * 1000),
        end_ms=int(now.timestamp() * 1000),
        artifacts=reference_artifacts(project, reference),
    )
