"""Direct loss estimation (DLE, as NannyML names it): a regressor's expected error on
unlabelled rows, from a second model that learnt on the holdout where the first one errs.

Two loss models (gradient-boosted trees) take the features and the prediction: one
predicts the absolute error, one the squared error. On a window the estimated MAE is the
mean predicted absolute error and the estimated RMSE the square root of the mean predicted
squared error. R² is not estimated: it needs the window's target variance, which no
output of the model gives, and a guess at it would not be an estimate.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from mm_platform.errors import DataError
from mm_platform.modeling.estimation import Estimate, band, bootstrap_sigma

REGRESSION_METRICS = ("mae", "rmse")  # r2 is not: see project.monitoring.NOT_ESTIMATED
_MAX_CATEGORIES = 255  # a HistGradientBoosting categorical feature's limit


class DLE:
    """Fitted on the holdout's features, predictions and targets; `estimate` gives the
    expected MAE and RMSE of a window's features and predictions."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    @property
    def columns(self) -> list[str]:
        """The window columns `estimate` reads."""
        return [*self.features_, "prediction"]

    def fit(self, features: pd.DataFrame, y_pred: Any, y: Any) -> DLE:
        """Fit the loss models on the holdout; its realised metrics and their bootstrap
        spread are the reference and the band's scale."""
        from sklearn.ensemble import HistGradientBoostingRegressor

        self.features_ = [str(c) for c in features.columns]
        self.categories_ = {
            c: sorted(features[c].dropna().astype(str).unique().tolist())
            for c in self.features_
            if not pd.api.types.is_numeric_dtype(features[c])
        }
        X = self._matrix(features, y_pred)
        error = np.asarray(y, dtype="float64") - np.asarray(y_pred, dtype="float64")
        mask = [c in self.categories_ and len(self.categories_[c]) <= _MAX_CATEGORIES
                for c in self.features_] + [False]  # fmt: skip
        self.loss_models_ = {}
        for name, loss in (("mae", np.abs(error)), ("mse", error**2)):
            model = HistGradientBoostingRegressor(
                max_iter=50, max_leaf_nodes=8, min_samples_leaf=20,
                categorical_features=mask, random_state=self.seed,
            )  # fmt: skip
            self.loss_models_[name] = model.fit(X, loss)
        self.n_reference_ = len(error)
        self.reference_ = _realised(error)
        self.sigma_ = bootstrap_sigma(lambda i: _realised(error[i]), len(error), self.seed)
        return self

    def estimate(self, rows: pd.DataFrame) -> dict[str, Estimate]:
        """The expected MAE and RMSE of `rows` (features and `prediction`) with bands."""
        missing = [c for c in [*self.features_, "prediction"] if c not in rows.columns]
        if missing:
            raise DataError(f"DLE needs the model's features and 'prediction'; missing {missing}")
        X = self._matrix(rows[self.features_], rows["prediction"])
        mae = float(np.clip(self.loss_models_["mae"].predict(X), 0, None).mean())
        mse = float(np.clip(self.loss_models_["mse"].predict(X), 0, None).mean())
        n, big = len(rows), (0.0, math.inf)
        return {
            "mae": band(mae, self.sigma_["mae"], self.n_reference_, n, big),
            "rmse": band(math.sqrt(mse), self.sigma_["rmse"], self.n_reference_, n, big),
        }

    def _matrix(self, features: pd.DataFrame, y_pred: Any) -> np.ndarray:
        """Numbers the trees take: numeric features as they are, others as the index of
        their category (unseen: missing), then the prediction."""
        columns = []
        for c in self.features_:
            if c in self.categories_:
                codes = {v: float(i) for i, v in enumerate(self.categories_[c])}
                values = features[c].astype(str).map(codes).where(features[c].notna())
                columns.append(values.to_numpy(dtype="float64"))
            else:
                try:
                    columns.append(pd.to_numeric(features[c]).to_numpy(dtype="float64"))
                except (TypeError, ValueError) as exc:
                    raise DataError(f"column '{c}' is not numeric as in the reference") from exc
        columns.append(np.asarray(y_pred, dtype="float64"))
        return np.column_stack(columns)

    def state(self) -> dict[str, Any]:
        """The fitted state (what the skops file holds)."""
        return {"kind": "dle", "seed": self.seed, "features": self.features_,
                "categories": self.categories_, "loss_models": self.loss_models_,
                "n_reference": self.n_reference_, "reference": self.reference_,
                "sigma": self.sigma_}  # fmt: skip

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> DLE:
        """The estimator `state()` describes."""
        fitted = cls(state["seed"])
        fitted.features_, fitted.categories_ = list(state["features"]), dict(state["categories"])
        fitted.loss_models_ = dict(state["loss_models"])
        fitted.n_reference_ = int(state["n_reference"])
        fitted.reference_, fitted.sigma_ = dict(state["reference"]), dict(state["sigma"])
        return fitted


def _realised(error: np.ndarray) -> dict[str, float]:
    return {"mae": float(np.abs(error).mean()), "rmse": float(np.sqrt((error**2).mean()))}
