"""Dataset sources: seeded synthetic generators, sklearn's bundled sets, CSV/Parquet files."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mm_platform.data.columns import PROBA_PREFIX, RESERVED_COLUMNS
from mm_platform.data.tables import read_table, require_path
from mm_platform.errors import DataError

if TYPE_CHECKING:
    from mm_platform.project.config import (
        Features,
        FileDataset,
        Project,
        SklearnDataset,
        SyntheticDataset,
    )


@dataclass(frozen=True)
class LoadedData:
    """Features, target and where they came from."""

    X: pd.DataFrame
    y: pd.Series
    name: str
    source: str

    @property
    def frame(self) -> pd.DataFrame:
        """Features and target in one frame (the target last)."""
        return self.X.assign(**{str(self.y.name): self.y.to_numpy()})


def load_dataset(project: Project) -> LoadedData:
    """Load the project's dataset and check it fits the project's task and features."""
    spec = project.dataset
    if spec.source == "synthetic":
        data = _synthetic(spec, project.seed)
    elif spec.source == "sklearn":
        data = _bundled(spec)
    else:
        data = _from_file(spec)
    return _checked(data, project)


def _synthetic(spec: SyntheticDataset, seed: int) -> LoadedData:
    from sklearn import datasets

    n = spec.n_samples
    if spec.generator == "linear":
        rng = np.random.default_rng(seed)
        x = rng.uniform(spec.x_low, spec.x_high, n)
        noise = 0.5 if spec.noise is None else spec.noise
        y = spec.slope * x + spec.intercept + rng.normal(0.0, noise, n)
        X = pd.DataFrame({"x": x})
        desc = (
            f"y = {spec.slope:g}x + {spec.intercept:g} + N(0, {noise:g}²), "
            f"x ~ U({spec.x_low:g}, {spec.x_high:g})"
        )
    elif spec.generator == "friedman1":
        noise = 1.0 if spec.noise is None else spec.noise
        Xa, y = datasets.make_friedman1(
            n_samples=n, n_features=spec.n_features or 10, noise=noise, random_state=seed
        )
        X = _numbered(Xa)
        desc = f"make_friedman1(noise={noise:g})"
    elif spec.generator == "regression":
        noise = 10.0 if spec.noise is None else spec.noise
        Xa, y = datasets.make_regression(
            n_samples=n, n_features=spec.n_features or 10, noise=noise, random_state=seed
        )
        X = _numbered(Xa)
        desc = f"make_regression(noise={noise:g})"
    else:
        n_features = spec.n_features or 10
        Xa, y = datasets.make_classification(
            n_samples=n,
            n_features=n_features,
            n_informative=max(2, min(n_features, n_features // 2)),
            n_redundant=0,
            n_classes=spec.n_classes,
            flip_y=0.01 if spec.noise is None else min(spec.noise, 1.0),
            random_state=seed,
        )
        X = _numbered(Xa)
        desc = "make_classification"
    name = f"synthetic-{spec.generator}"
    return LoadedData(X=X, y=pd.Series(y, name="y"), name=name, source=f"{desc}, seed={seed}")


def _numbered(values: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(values, columns=[f"x{i}" for i in range(values.shape[1])])


def _bundled(spec: SklearnDataset) -> LoadedData:
    from sklearn import datasets

    loader = getattr(datasets, f"load_{spec.name}")
    bunch = loader(as_frame=True)
    X = bunch.data.copy()
    X.columns = [str(c) for c in X.columns]
    y = pd.Series(np.asarray(bunch.target), name="target")
    return LoadedData(
        X=X, y=y, name=f"sklearn-{spec.name}", source=f"sklearn.datasets.load_{spec.name}"
    )


def _from_file(spec: FileDataset) -> LoadedData:
    path = require_path(spec.path, "no such data file; fix dataset.path in the project file")
    frame = read_table(
        path, spec.file_format, hint="set dataset.format if the suffix is misleading"
    )
    frame.columns = [str(c) for c in frame.columns]
    if spec.target not in frame.columns:
        shown = ", ".join(list(frame.columns)[:20])
        raise DataError(
            f"{path}: target column '{spec.target}' is missing (columns: {shown}); "
            "fix dataset.target"
        )
    y = frame[spec.target].rename(spec.target)
    X = frame.drop(columns=[spec.target])
    return LoadedData(X=X, y=y, name=path.stem, source=str(path))


def _checked(data: LoadedData, project: Project) -> LoadedData:
    where = data.source if project.dataset.source == "file" else data.name
    if len(data.X) == 0:
        raise DataError(f"{where}: the dataset has no rows; a project needs data to train on")
    X = _numeric(_features(data.X, project.features, where), project.features, where)
    y = data.y
    _check_target(y, project.task, where)
    min_rows = 2 * project.split.cv_folds + 2
    if len(X) < min_rows:
        raise DataError(
            f"{where}: {len(X)} rows are too few for a holdout split and "
            f"{project.split.cv_folds}-fold CV; give at least {min_rows} rows"
        )
    return LoadedData(
        X=X.reset_index(drop=True), y=y.reset_index(drop=True), name=data.name, source=data.source
    )


def _features(X: pd.DataFrame, feats: Features, where: str) -> pd.DataFrame:
    """The feature columns: the named ones must exist, dropped ones go, reserved names fail."""
    for key in ("categorical", "drop"):
        for col in getattr(feats, key):
            if col not in X.columns:
                raise DataError(
                    f"{where}: column '{col}' named in features.{key} is not in the data "
                    f"(columns: {', '.join(list(X.columns)[:20])})"
                )
    X = X.drop(columns=list(feats.drop))
    for col in X.columns:
        if col in RESERVED_COLUMNS or col.startswith(PROBA_PREFIX):
            raise DataError(
                f"{where}: feature column '{col}' has a name the prediction log reserves "
                f"({', '.join(RESERVED_COLUMNS)}, {PROBA_PREFIX}<class>); rename it in the "
                "data, or list it under features.drop"
            )
    if X.shape[1] == 0:
        raise DataError(f"{where}: no feature columns are left; features.drop removes them all")
    return X


def _numeric(X: pd.DataFrame, feats: Features, where: str) -> pd.DataFrame:
    """Non-categorical columns as numbers (integers as float64); text that is not a number
    fails, naming the column."""
    for col in X.columns:
        if col in feats.categorical or pd.api.types.is_bool_dtype(X[col]):
            continue
        if not pd.api.types.is_numeric_dtype(X[col]):
            converted = pd.to_numeric(X[col], errors="coerce")
            bad = X[col][converted.isna() & X[col].notna()]
            if len(bad):
                raise DataError(
                    f"{where}: column '{col}' is not numeric (e.g. {bad.iloc[0]!r}); "
                    "list it under features.categorical, or under features.drop"
                )
            X = X.assign(**{col: converted})
        if pd.api.types.is_integer_dtype(X[col]):
            # float in the logged signature, so served requests may carry missing values
            X = X.assign(**{col: X[col].astype("float64")})
    return X


def _check_target(y: pd.Series, task: str, where: str) -> None:
    """The target has no missing values and fits the task (numeric; 2 or 3+ classes)."""
    if y.isna().any():
        raise DataError(
            f"{where}: target column '{y.name}' has {int(y.isna().sum())} missing values; "
            "drop those rows or fill them in before training"
        )
    if task == "regression":
        if not pd.api.types.is_numeric_dtype(y):
            raise DataError(
                f"{where}: target column '{y.name}' is not numeric (e.g. {y.iloc[0]!r}) but "
                "task is regression; use task: binary or multiclass"
            )
        return
    n_classes = y.nunique()
    if task == "binary" and n_classes != 2:
        raise DataError(
            f"{where}: task is binary but target '{y.name}' has {n_classes} classes; "
            "use task: multiclass" + (" (or regression)" if n_classes > 20 else "")
        )
    if task == "multiclass" and n_classes < 3:
        raise DataError(
            f"{where}: task is multiclass but target '{y.name}' has {n_classes} classes; "
            "use task: binary"
        )
