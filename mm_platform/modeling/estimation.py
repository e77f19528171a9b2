"""Performance without labels: the estimator fitted on the holdout (the reference sample)
at training time, kept as one skops file next to the reference, applied by drift jobs.

Classifiers get CBPE (`cbpe`), regressors DLE (`dle`). Both rest on one premise: the
relation between inputs and target, P(y|x), is the one the holdout showed (covariate
shift). Under concept shift the model's own outputs cannot tell, and the estimate is wrong.

The band: the estimate's sampling error is taken as the spread of the realised metric on
bootstrap resamples of the reference (`sigma_`, at the reference's size), scaled to the
window's size by 1/sqrt(n), as sampling errors of means scale; the band is ±3σ, clipped
to the metric's range (NannyML's choice of width).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mm_platform.data.columns import PROBA_PREFIX
from mm_platform.errors import DataError

if TYPE_CHECKING:
    from mm_platform.modeling.cbpe import CBPE
    from mm_platform.modeling.dle import DLE
    from mm_platform.project.config import Project

logger = logging.getLogger(__name__)

ESTIMATOR_ARTIFACT = "reference/estimator.skops"
BAND_SIGMAS = 3.0
BOOTSTRAP_REPEATS = 50
# the only types an estimator file may ask skops to trust: the loss models' own parts
_TRUSTED_PREFIXES = ("sklearn.",)
_TRUSTED_NAMES = ("functools.partial",)


@dataclass(frozen=True)
class Estimate:
    """One estimated metric and its band."""

    value: float
    lower: float
    upper: float


def band(
    value: float, sigma: float, n_reference: int, n: int, bounds: tuple[float, float]
) -> Estimate:
    """`value` ± BAND_SIGMAS σ, σ being `sigma` (at `n_reference` rows) scaled to `n` rows."""
    width = BAND_SIGMAS * sigma * math.sqrt(n_reference / max(n, 1))
    low, high = bounds
    return Estimate(value, max(low, value - width), min(high, value + width))


def bootstrap_sigma(
    realised: Callable[[np.ndarray], dict[str, float]], n: int, seed: int
) -> dict[str, float]:
    """The standard deviation of each metric `realised(rows)` returns, over bootstrap
    resamples of `n` rows (indices handed to `realised`)."""
    rng = np.random.default_rng(seed)
    draws = [realised(rng.integers(0, n, n)) for _ in range(BOOTSTRAP_REPEATS)]
    return {m: float(np.nanstd([d[m] for d in draws if m in d])) for m in draws[0]}


def frame_classes(reference: pd.DataFrame, target: str) -> list[Any] | None:
    """The model's classes in its order, as labels of the reference's type, from the names
    of its `proba_<class>` columns (None for a regressor or a reference without them)."""
    columns = [c for c in reference.columns if c.startswith(PROBA_PREFIX)]
    if not columns:
        return None
    seen_in = [c for c in (target, "prediction") if c in reference.columns]
    seen = {str(v): v for v in pd.unique(reference[seen_in].to_numpy().ravel())}
    classes = [seen.get(c[len(PROBA_PREFIX) :]) for c in columns]
    if any(c is None for c in classes):
        return None
    return [c.item() if isinstance(c, np.generic) else c for c in classes]


def fit_estimator(task: str, reference: pd.DataFrame, target: str, seed: int) -> CBPE | DLE:
    """The estimator of `task` fitted on `reference` (features, target, `prediction` and,
    for a classifier, `proba_<class>` columns)."""
    if target not in reference.columns or "prediction" not in reference.columns:
        raise DataError(
            f"the reference has no '{target}' or 'prediction' column: nothing to fit the "
            "performance estimator on"
        )
    labelled = reference[reference[target].notna()]
    if task == "regression":
        from mm_platform.modeling.dle import DLE

        made = ["prediction", target]
        return DLE(seed=seed).fit(labelled.drop(columns=made), labelled["prediction"],
                                  labelled[target])  # fmt: skip
    from mm_platform.modeling.cbpe import CBPE

    classes = frame_classes(labelled, target)
    if classes is None:
        raise DataError(
            "the reference has no class probabilities (proba_<class> columns): CBPE needs "
            "a model with predict_proba"
        )
    return CBPE(task, classes, seed=seed).fit(labelled, labelled["prediction"], labelled[target])


def estimator_artifacts(project: Project, reference: pd.DataFrame) -> dict[str, bytes]:
    """The run artifact of the estimator fitted on the reference sample, next to it; none
    (with a warning) when it cannot be fitted: drift jobs then say why there is no estimate."""
    from mm_platform.data.columns import target_name

    try:
        fitted = fit_estimator(project.task, reference, target_name(project), project.seed)
    except (DataError, ValueError) as exc:
        logger.warning("%s: no performance estimator logged: %s", project.name, exc)
        return {}
    return {ESTIMATOR_ARTIFACT: estimator_bytes(fitted)}


def estimator_bytes(estimator: CBPE | DLE) -> bytes:
    """The fitted estimator as a skops file (no pickle: loading it runs no code)."""
    import zipfile

    import skops.io as sio

    return bytes(sio.dumps(estimator.state(), compression=zipfile.ZIP_DEFLATED))


def estimator_from_bytes(data: bytes) -> CBPE | DLE:
    """The estimator a skops file from `estimator_bytes` holds."""
    import skops.io as sio

    from mm_platform.modeling.cbpe import CBPE
    from mm_platform.modeling.dle import DLE

    asked = sio.get_untrusted_types(data=data)
    foreign = [t for t in asked if not t.startswith(_TRUSTED_PREFIXES) and t not in _TRUSTED_NAMES]
    if foreign:
        raise DataError(f"the performance estimator file asks to trust {foreign}: refused")
    state = sio.loads(data, trusted=asked)
    kind = state.get("kind") if isinstance(state, dict) else None
    if kind == "cbpe":
        return CBPE.from_state(state)
    if kind == "dle":
        return DLE.from_state(state)
    raise DataError(f"not a performance estimator file (kind {kind!r})")
