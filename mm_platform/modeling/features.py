"""Preprocessing and feature engineering as one scikit-learn Pipeline per candidate."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sklearn.compose import ColumnTransformer
from sklearn.feature_selection import SelectKBest, f_classif, f_regression
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (
    MinMaxScaler,
    OneHotEncoder,
    PolynomialFeatures,
    RobustScaler,
    StandardScaler,
)

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.base import BaseEstimator

    from mm_platform.project.config import Features

_SCALERS = {"standard": StandardScaler, "minmax": MinMaxScaler, "robust": RobustScaler}


def build_preprocessor(features: Features, columns: list[str]) -> ColumnTransformer:
    """Impute, scale and expand numeric columns; impute and one-hot encode categorical ones."""
    categorical = [c for c in columns if c in features.categorical]
    numeric = [c for c in columns if c not in features.categorical]
    numeric_steps: list[tuple[str, object]] = []
    if features.impute != "none":
        numeric_steps.append(("impute", SimpleImputer(strategy=features.impute)))
    if features.scale != "none":
        numeric_steps.append(("scale", _SCALERS[features.scale]()))
    if features.polynomial_degree > 1:
        numeric_steps.append(
            (
                "poly",
                PolynomialFeatures(
                    degree=features.polynomial_degree,
                    interaction_only=features.interaction_only,
                    include_bias=False,
                ),
            )
        )
    if not numeric_steps:
        numeric_steps.append(("identity", "passthrough"))
    transformers: list[tuple[str, object, list[str]]] = []
    if numeric:
        transformers.append(("numeric", Pipeline(numeric_steps), numeric))
    if categorical:
        transformers.append(
            (
                "categorical",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="most_frequent")),
                        ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
                    ]
                ),
                categorical,
            )
        )
    return ColumnTransformer(transformers, verbose_feature_names_out=False)


def build_pipeline(
    features: Features, columns: list[str], estimator: BaseEstimator, task: str
) -> Pipeline:
    """The full model: preprocessing, optional univariate selection, then the estimator."""
    steps: list[tuple[str, object]] = [("preprocess", build_preprocessor(features, columns))]
    if features.select_k_best is not None:
        score = f_regression if task == "regression" else f_classif
        steps.append(("select", SelectKBest(score_func=score, k=features.select_k_best)))
    steps.append(("model", estimator))
    return Pipeline(steps)


def n_engineered_features(features: Features, X: pd.DataFrame) -> int:
    """How many columns preprocessing makes from `X` (checks select_k_best against it)."""
    preprocessor = build_preprocessor(features, list(X.columns)).fit(X)
    return preprocessor.transform(X.head(1)).shape[1]
