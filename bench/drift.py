"""mm's drift computation against raw Evidently `Report([DataDriftPreset()])`.

Targets (issue 5), 20 numeric and 5 categorical columns, reference and current of equal
size, no sampling, at 1M rows:
- wall time >= 10x less than the peer's;
- peak memory <= 0.5x the peer's;
- every column's drift score equal to the peer's within 1e-9.

Each side runs in its own fresh process on the same seeded data, so each process's peak
resident memory (VmHWM) is its own. "mm" times what `mm drift` does with the data:
the checks, every column's drift and quality summary, and the Evidently HTML report and
snapshot. The peer times `Report([DataDriftPreset()]).run(current, reference)` alone (its
HTML is not rendered). Neither side's time includes importing Evidently or making the data.

The job (issue 14): the whole nightly job a user runs, each side as its own process timed
from start to exit, on labelled rows of `friedman` (projects/friedman.yaml, trained once
into a fresh SQLite store). mm: `mm drift <project> --current rows.parquet` (load the
version, score, drift of features, prediction and target, regression quality, the HTML
report and snapshot, one MLflow run). The peer, as a user would write it with the same
packages: `mlflow.pyfunc.load_model`, predict, the version's reference sample downloaded,
`Report([DataDriftPreset(), RegressionPreset()])`, `save_html`, one MLflow run with the
preset's scores and the HTML. Targets: mm >= 3x faster at 300k rows, >= 5x at 1M, with
the same drift scores and RMSE/MAE/R2.

Run: python bench/drift.py [--sections compute,job] [--rows 10000 100000 1000000]
     [--job-rows 300000 1000000] [--quick]  (--quick: 5,000 rows; the job at 20,000 rows of
     a small friedman project)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

N_NUMERIC, N_CATEGORICAL = 20, 5


def make_frames(rows: int):
    """Seeded reference and current frames; a third of the columns drift a little."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(7)

    def frame(shifted: bool) -> pd.DataFrame:
        data = {}
        for i in range(N_NUMERIC):
            shift = 0.3 * (i % 3 == 0) if shifted else 0.0
            if i % 2:
                data[f"num_{i}"] = rng.normal(shift, 1.0, rows)
            else:
                data[f"num_{i}"] = rng.gamma(2.0 + shift, 1.5, rows)
        for j in range(N_CATEGORICAL):
            # one str object per level, as pyarrow's to_pandas gives when reading Parquet
            levels = np.array([f"level_{k}" for k in range(3 + 10 * j)], dtype=object)
            weights = np.linspace(1.0, 2.0 + (0.2 * shifted * (j % 2)), len(levels))
            data[f"cat_{j}"] = rng.choice(levels, rows, p=weights / weights.sum())
        return pd.DataFrame(data)

    return frame(False), frame(True)


def peak_rss_kb() -> int:
    """This process's peak resident memory (VmHWM). Not ru_maxrss: Linux carries a
    parent's peak into a child across fork and exec, so a fresh process would report at
    least the peak of the process that started it."""
    status = Path("/proc/self/status").read_text()
    return int(next(x for x in status.splitlines() if x.startswith("VmHWM:")).split()[1])


def run_side(side: str, rows: int, out: str) -> None:
    """One measurement in this (fresh) process; writes seconds, memory and scores to `out`."""
    os.environ["DO_NOT_TRACK"] = "1"
    import warnings

    warnings.simplefilter("ignore")
    reference, current = make_frames(rows)
    if side == "mm":
        from mm_platform.monitoring.drift import ColumnSpec, build_report, check_current, compute

        specs = [ColumnSpec(c, "num" if c.startswith("num") else "cat") for c in reference]
        base = peak_rss_kb()
        start = time.perf_counter()
        check_current(current, specs, source="bench")
        result = compute(reference, current, specs)
        snapshot = build_report(result, name="bench")
        html_bytes = len(snapshot.get_html_str(as_iframe=False))
        snapshot.dumps()
        seconds = time.perf_counter() - start
        scores = {c.spec.name: c.score for c in result.columns}
        extra = {"html_bytes": html_bytes}
    else:
        from evidently import Report
        from evidently.presets import DataDriftPreset

        base = peak_rss_kb()
        start = time.perf_counter()
        snapshot = Report([DataDriftPreset()]).run(current, reference)
        seconds = time.perf_counter() - start
        scores = {
            m["config"]["column"]: m["value"]
            for m in snapshot.dict()["metrics"]
            if m["config"]["type"].endswith(":ValueDrift")
        }
        extra = {}
    peak = peak_rss_kb()
    record = {"seconds": seconds, "peak_kb": peak, "base_kb": base, "scores": scores, **extra}
    Path(out).write_text(json.dumps(record))


def measure(side: str, rows: int, folder: Path) -> dict:
    out = folder / f"{side}-{rows}.json"
    subprocess.run(
        [sys.executable, __file__, "--side", side, "--rows", str(rows), "--out", str(out)],
        check=True,
    )
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="compute,job")
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--job-rows", type=int, nargs="+", default=[300_000, 1_000_000])
    parser.add_argument("--side", choices=["mm", "peer", "peer-job"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="a small run that checks it works")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.job_rows = [5_000], [20_000]
    if args.side == "peer-job":
        peer_job(args.data, args.out)
        return
    if args.side:
        run_side(args.side, args.rows[0], args.out)
        return
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="mm-bench-drift-"))
    sections = args.sections.split(",")
    if "compute" in sections:
        compute_section(args.rows, folder)
    if "job" in sections:
        job_section(args.job_rows, folder, quick=args.quick)


def compute_section(rows_list: list[int], folder: Path) -> None:
    print(f"{N_NUMERIC} numeric + {N_CATEGORICAL} categorical columns, reference and current "
          f"of equal size; {os.cpu_count()} cores")  # fmt: skip
    print("| rows | peer s | mm s | time ratio | peer peak MB | mm peak MB | memory ratio "
          "| max score diff | drifted (peer / mm) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    verdicts = []
    for rows in rows_list:
        peer = measure("peer", rows, folder)
        ours = measure("mm", rows, folder)
        assert set(peer["scores"]) == set(ours["scores"]), "column sets differ"
        diff = max(abs(peer["scores"][c] - ours["scores"][c]) for c in peer["scores"])
        time_ratio = peer["seconds"] / ours["seconds"]
        memory_ratio = ours["peak_kb"] / peer["peak_kb"]
        print(
            f"| {rows:,} | {peer['seconds']:.1f} | {ours['seconds']:.2f} | {time_ratio:.1f}x "
            f"| {peer['peak_kb'] / 1024:.0f} | {ours['peak_kb'] / 1024:.0f} "
            f"| {memory_ratio:.2f}x | {diff:.1e} | "
            f"{sum(_drifted(peer, c) for c in peer['scores'])} / "
            f"{sum(_drifted(ours, c) for c in ours['scores'])} |"
        )
        if rows >= 1_000_000:
            verdicts.append(
                f"1M rows: time {time_ratio:.1f}x less (target >= 10x: "
                f"{'PASS' if time_ratio >= 10 else 'FAIL'}), memory {memory_ratio:.2f}x "
                f"(target <= 0.5x: {'PASS' if memory_ratio <= 0.5 else 'FAIL'}), "
                f"max score difference {diff:.1e} (target <= 1e-9: "
                f"{'PASS' if diff <= 1e-9 else 'FAIL'})"
            )
    print("\n".join(verdicts))


# --- the whole job ------------------------------------------------------------------------

QUICK_PROJECT = """name: friedman
task: regression
dataset: {source: synthetic, generator: friedman1, n_samples: 3000, n_features: 10, noise: 1.0}
candidates:
  - estimator: hist_gradient_boosting
    params: {max_iter: [50]}
selection: {metric: rmse}
split: {holdout_fraction: 0.2, cv_folds: 2}
seed: 42
"""
FEATURES = [f"x{i}" for i in range(10)]


def job_section(rows_list: list[int], folder: Path, *, quick: bool) -> None:
    """Train friedman once, then time `mm drift` and the peer job on each window size."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlflow.db",
           "DO_NOT_TRACK": "1", "PYTHONWARNINGS": "ignore"}  # fmt: skip
    project = folder / "friedman.yaml"
    repo = Path(__file__).resolve().parent.parent
    if quick:
        project.write_text(QUICK_PROJECT)
    else:
        project.write_text((repo / "projects" / "friedman.yaml").read_text())
    mm = str(Path(sys.executable).with_name("mm"))
    subprocess.run([mm, "train", str(project)], env=env, cwd=folder, check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    print(f"\nThe whole job on labelled friedman rows, each side its own process, wall time "
          f"from start to exit; {os.cpu_count()} cores")  # fmt: skip
    print("| labelled rows | peer job s | mm drift s | ratio | max drift score diff "
          "| max RMSE/MAE/R2 diff |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    verdicts = []
    for rows in rows_list:
        data = _window_file(folder, rows)
        started = time.perf_counter()
        done = subprocess.run([mm, "drift", str(project), "--current", str(data)], env=env,
                              cwd=folder, check=False, stdout=subprocess.DEVNULL)  # fmt: skip
        mm_seconds = time.perf_counter() - started
        assert done.returncode in (0, 5), f"mm drift failed (exit {done.returncode})"
        out = folder / f"peer-job-{rows}.json"
        started = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--side", "peer-job", "--data", str(data),
                        "--out", str(out)], env=env, cwd=folder, check=True)  # fmt: skip
        peer_seconds = time.perf_counter() - started
        peer = json.loads(out.read_text())
        ours = _latest_drift_metrics(env["MLFLOW_TRACKING_URI"])
        drift_diff = max(abs(ours[f"drift_score.{c}"] - peer["drift"][c]) for c in FEATURES)
        drift_diff = max(
            drift_diff, abs(ours["prediction_drift_score"] - peer["drift"]["prediction"])
        )
        quality_diff = max(abs(ours[f"current_{m}"] - peer["quality"][m]) for m in peer["quality"])
        ratio = peer_seconds / mm_seconds
        print(f"| {rows:,} | {peer_seconds:.1f} | {mm_seconds:.1f} | {ratio:.2f}x "
              f"| {drift_diff:.1e} | {quality_diff:.1e} |")  # fmt: skip
        target = {300_000: 3.0, 1_000_000: 5.0}.get(rows)
        if target is not None:
            verdicts.append(f"{rows:,} rows: mm {ratio:.2f}x faster (target >= {target:g}x: "
                            f"{'PASS' if ratio >= target else 'FAIL'}), scores equal within "
                            f"{max(drift_diff, quality_diff):.1e}")  # fmt: skip
    print("\n".join(verdicts))


def _window_file(folder: Path, rows: int) -> Path:
    """`rows` labelled friedman rows (another seed than training's) as Parquet."""
    import pandas as pd
    from sklearn.datasets import make_friedman1

    X, y = make_friedman1(n_samples=rows, n_features=10, noise=1.0, random_state=1)
    frame = pd.DataFrame(X, columns=FEATURES)
    frame["y"] = y
    path = folder / f"window-{rows}.parquet"
    frame.to_parquet(path)
    return path


def _latest_drift_metrics(uri: str) -> dict[str, float]:
    import mlflow

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("friedman-monitoring")
    run = client.search_runs([experiment.experiment_id], order_by=["start_time DESC"],
                             max_results=1)[0]  # fmt: skip
    return run.data.metrics


def peer_job(data: str, out: str) -> None:
    """The job as a user writes it with mlflow and Evidently directly."""
    import warnings

    warnings.simplefilter("ignore")
    import mlflow
    import pandas as pd
    from evidently import DataDefinition, Dataset, Regression, Report
    from evidently.presets import DataDriftPreset, RegressionPreset

    model = mlflow.pyfunc.load_model("models:/friedman@champion")
    current = pd.read_parquet(data)
    current["prediction"] = model.predict(current[FEATURES])
    run_id = mlflow.MlflowClient().get_model_version_by_alias("friedman", "champion").run_id
    reference = pd.read_parquet(mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="reference/reference.parquet"))  # fmt: skip
    definition = DataDefinition(
        numerical_columns=[*FEATURES, "y", "prediction"],
        regression=[Regression(target="y", prediction="prediction")],
    )
    snapshot = Report([DataDriftPreset(), RegressionPreset()]).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    html = Path(out).with_suffix(".html")
    snapshot.save_html(str(html))
    drift, quality = {}, {}
    for metric in snapshot.dict()["metrics"]:
        kind, value = metric["config"]["type"].rsplit(":", 1)[-1], metric["value"]
        if kind == "ValueDrift":
            drift[metric["config"]["column"]] = value
        elif kind in ("RMSE", "MAE", "R2Score"):
            name = {"RMSE": "rmse", "MAE": "mae", "R2Score": "r2"}[kind]
            quality[name] = value["mean"] if isinstance(value, dict) else value
    mlflow.set_experiment("friedman-peer-monitoring")
    with mlflow.start_run():
        mlflow.log_metrics({f"current_{k}": v for k, v in quality.items()})
        mlflow.log_metrics({f"drift_score.{k}": v for k, v in drift.items()})
        mlflow.log_artifact(str(html))
    Path(out).write_text(json.dumps({"drift": drift, "quality": quality}))


def _drifted(side: dict, column: str) -> int:
    # wasserstein and Jensen-Shannon (the tests chosen above 1000 rows): drift at >= 0.1
    return int(side["scores"][column] >= 0.1)


if __name__ == "__main__":
    main()
