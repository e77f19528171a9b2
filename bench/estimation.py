"""mm's CBPE estimate of ROC-AUC (and accuracy, F1) against NannyML's CBPE, same data.

A logistic regression is trained on a seeded logistic generator; the holdout is the
reference; windows shift the inputs (mean and spread) while P(y|x) stays, a covariate
shift, so the realised metric moves and an estimate should follow it. For each window the
bench prints the realised value, mm's estimate and NannyML's, and each one's error.

NannyML is not a dependency of mm (it pulls LightGBM, XGBoost, FLAML, cloud filesystems
and usage telemetry); it runs in its own interpreter, given by --nannyml-python (default
$MM_NANNYML_PYTHON, else /tmp/nm/bin/python, e.g. `python3 -m venv /tmp/nm &&
/tmp/nm/bin/pip install nannyml "pandas<3" statsmodels`; NannyML 0.13.1 imports statsmodels
without declaring it), with NML_DISABLE_USAGE_LOGGING=1. When it is
absent the bench says so and prints mm's figures alone.

Run: python bench/estimation.py [--rows 20000] [--quick]  (--quick: 3,000-row windows,
no NannyML; under 30 s)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WEIGHTS = (1.5, -1.0, 0.5, 0.0)
SHIFTS = [(0.0, 1.0), (0.8, 0.5), (-1.0, 0.4), (1.5, 0.3)]  # (mean, spread) of the inputs
METRICS = ("roc_auc", "accuracy", "f1")
NANNYML_SCRIPT = r"""
import json, sys
import pandas as pd
import nannyml as nml
metrics = sys.argv[1].split(",")
reference = pd.read_parquet(sys.argv[2])
out = {}
for path in sys.argv[3:]:
    window = pd.read_parquet(path)
    cbpe = nml.CBPE(y_pred_proba="proba_1", y_pred="prediction", y_true="label",
                    problem_type="classification_binary", metrics=metrics,
                    chunk_size=len(window))
    cbpe.fit(reference)
    frame = cbpe.estimate(window.drop(columns="label")).to_df()
    out[path] = {m: float(frame[(m, "value")].iloc[-1]) for m in metrics}
print(json.dumps(out))
"""


def rows(n: int, seed: int, mean: float = 0.0, spread: float = 1.0):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    X = rng.normal(mean, spread, (n, len(WEIGHTS)))
    p = 1.0 / (1.0 + np.exp(-(X @ np.array(WEIGHTS) - 0.3)))
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(len(WEIGHTS))])
    return frame.assign(label=(rng.random(n) < p).astype(int))


def scored(model, frame):
    features = frame.drop(columns="label")
    proba = model.predict_proba(features)
    return frame.assign(prediction=model.predict(features), proba_0=proba[:, 0],
                        proba_1=proba[:, 1])  # fmt: skip


def realised(frame) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    y, y_pred = frame["label"], frame["prediction"]
    return {"roc_auc": roc_auc_score(y, frame["proba_1"]),
            "accuracy": accuracy_score(y, y_pred), "f1": f1_score(y, y_pred)}  # fmt: skip


def nannyml_estimates(python: str | None, reference, windows) -> tuple[list | None, str]:
    """NannyML's estimates per window, or None and why."""
    if not python or not Path(python).exists():
        return None, f"NannyML: no interpreter at {python!r} (see --nannyml-python)"
    with tempfile.TemporaryDirectory() as tmp:
        reference.to_parquet(Path(tmp) / "reference.parquet")
        paths = []
        for i, window in enumerate(windows):
            paths.append(str(Path(tmp) / f"window{i}.parquet"))
            window.to_parquet(paths[-1])
        env = {**os.environ, "NML_DISABLE_USAGE_LOGGING": "1"}
        done = subprocess.run(
            [python, "-c", NANNYML_SCRIPT, ",".join(METRICS), str(Path(tmp) / "reference.parquet"),
             *paths],
            capture_output=True, text=True, env=env, check=False, timeout=600,
        )  # fmt: skip
        if done.returncode:
            return None, "NannyML failed: " + done.stderr.strip().splitlines()[-1][:300]
        found = json.loads(done.stdout.strip().splitlines()[-1])
        return [found[p] for p in paths], "NannyML: ran in " + python


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="rows per window")
    parser.add_argument("--quick", action="store_true", help="3,000-row windows, no NannyML")
    parser.add_argument(
        "--nannyml-python", default=os.environ.get("MM_NANNYML_PYTHON", "/tmp/nm/bin/python")
    )
    args = parser.parse_args()  # fmt: skip
    from sklearn.linear_model import LogisticRegression

    from mm_platform.modeling.estimation import fit_estimator

    n = 3_000 if args.quick else args.rows
    model = LogisticRegression().fit(*_xy(rows(20_000, seed=1)))
    reference = scored(model, rows(max(n // 2, 2_000), seed=2))
    started = time.perf_counter()
    estimator = fit_estimator("binary", reference, "label", 0)
    print(f"mm CBPE fitted on {len(reference)} holdout rows in "
          f"{time.perf_counter() - started:.2f} s")  # fmt: skip
    windows = [scored(model, rows(n, 10 + i, *shift)) for i, shift in enumerate(SHIFTS)]
    peer, why = (
        (None, "NannyML: skipped (--quick)")
        if args.quick
        else nannyml_estimates(args.nannyml_python, reference, windows)
    )
    print(why)
    for i, (shift, window) in enumerate(zip(SHIFTS, windows, strict=True)):
        truth, ours = realised(window), estimator.estimate(window)
        print(f"window {i}: inputs N({shift[0]}, {shift[1]}^2), {len(window)} rows")
        for m in METRICS:
            ours_m = ours[m]
            line = (f"  {m:8s} realised {truth[m]:.4f}  mm {ours_m.value:.4f} "
                    f"[{ours_m.lower:.4f}, {ours_m.upper:.4f}] "
                    f"error {ours_m.value - truth[m]:+.4f}")  # fmt: skip
            if peer is not None:
                line += f"  NannyML {peer[i][m]:.4f} error {peer[i][m] - truth[m]:+.4f}"
            print(line)


def _xy(frame):
    return frame.drop(columns="label"), frame["label"]


if __name__ == "__main__":
    main()
