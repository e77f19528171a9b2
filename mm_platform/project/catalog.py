"""The estimators a project may name, by task, as import paths (nothing is imported here)."""

from __future__ import annotations

from typing import Literal

Task = Literal["regression", "binary", "multiclass"]

# name -> {"regression": "module:Class", "classification": "module:Class"}
ESTIMATORS: dict[str, dict[str, str]] = {
    "linear": {"regression": "sklearn.linear_model:LinearRegression"},
    "ridge": {"regression": "sklearn.linear_model:Ridge"},
    "lasso": {"regression": "sklearn.linear_model:Lasso"},
    "elastic_net": {"regression": "sklearn.linear_model:ElasticNet"},
    "logistic": {"classification": "sklearn.linear_model:LogisticRegression"},
    "decision_tree": {
        "regression": "sklearn.tree:DecisionTreeRegressor",
        "classification": "sklearn.tree:DecisionTreeClassifier",
    },
    "random_forest": {
        "regression": "sklearn.ensemble:RandomForestRegressor",
        "classification": "sklearn.ensemble:RandomForestClassifier",
    },
    "extra_trees": {
        "regression": "sklearn.ensemble:ExtraTreesRegressor",
        "classification": "sklearn.ensemble:ExtraTreesClassifier",
    },
    "gradient_boosting": {
        "regression": "sklearn.ensemble:GradientBoostingRegressor",
        "classification": "sklearn.ensemble:GradientBoostingClassifier",
    },
    "hist_gradient_boosting": {
        "regression": "sklearn.ensemble:HistGradientBoostingRegressor",
        "classification": "sklearn.ensemble:HistGradientBoostingClassifier",
    },
    "knn": {
        "regression": "sklearn.neighbors:KNeighborsRegressor",
        "classification": "sklearn.neighbors:KNeighborsClassifier",
    },
    "mlp": {
        "regression": "sklearn.neural_network:MLPRegressor",
        "classification": "sklearn.neural_network:MLPClassifier",
    },
}

# metric name -> (tasks it applies to, True when larger is better)
METRICS: dict[str, tuple[tuple[str, ...], bool]] = {
    "rmse": (("regression",), False),
    "mae": (("regression",), False),
    "r2": (("regression",), True),
    "accuracy": (("binary", "multiclass"), True),
    "recall": (("binary", "multiclass"), True),
    "f1": (("binary", "multiclass"), True),
    "roc_auc": (("binary", "multiclass"), True),
}


def task_family(task: str) -> str:
    """Return "regression" or "classification" for a project task."""
    return "regression" if task == "regression" else "classification"


def estimator_path(name: str, task: str) -> str:
    """Return the "module:Class" import path of estimator `name` for `task`."""
    return ESTIMATORS[name][task_family(task)]


def metrics_for(task: str) -> list[str]:
    """Return the holdout metric names reported for `task`, in display order."""
    return [m for m, (tasks, _) in METRICS.items() if task in tasks]
