"""mm's Spark drift engine against the pandas engine and Evidently's legacy Spark engine.

Targets (issue 13), 20 numeric columns (normal, gamma, uniform, few-valued, Poisson counts)
and 5 string categories, 2-10 % missing, a third of them shifted in the current window:
- accuracy and speed: a 10M-row current window against a 1M-row reference, read from
  Parquet. Every score of our Spark engine (local[2]) equal to the pandas engine's, which
  are the exact ones (that engine equals Evidently's own tests), within 1e-9; Evidently's
  legacy Spark engine (chi-square, Jensen-Shannon, PSI, Wasserstein; no KS) on the same
  data with each column's method given to all three, its error against the exact score
  of that method; ours faster than the legacy engine (on a 200k-row slice, and on the
  whole window under a 20-minute limit);
- scale: a 50M-row window with spark.driver.memory=1g completes on Spark; the pandas
  engine, given the same memory (RLIMIT_AS: its own size after imports plus 1 GB), does not;
- scaling: local[1] against local[2] on the first 2M rows of the window, as the speed-up
  per core;
- batch scoring: Spark (mlflow.pyfunc.spark_udf) against `mm predict` on 5M rows, rows/s.

Each engine runs in its own fresh process (on Spark, its own JVM), so the peaks do not
mix: the Python driver's peak resident memory (VmHWM) and, on Spark, the driver JVM's
(VmHWM of the java child; in local mode the executors run inside it). Drift times leave out
imports, the JVM's start and making the data; they include reading the Parquet files.
Batch-scoring times are whole `mm predict` commands (start-up included); the full run also
times a 1,000-row command of each engine and reports the rate over the difference.

The legacy engine takes 10-25 s per column here, whatever the size (many small Spark jobs
per column), so it runs on a slice: the first 200k rows of each side (full: all 25
columns; quick: one), under a time limit. Each process runs the slice first, then the
whole window, so every JVM is equally cold on the slice, and ours and the pandas engine are
timed on that same slice with the same methods.

Run: python bench/spark.py [--quick] [--sections accuracy,legacy-window,scale,scaling,batch]
(--sections: which, in that order; --quick: 20k against 10k rows of 6 columns, a
one-column 5k-row legacy slice, a 3M-row two-column window with a 512 MB driver against
pandas in 128 MB, 50k rows scored; about 4 minutes on 2 cores. Its figures are not the
targets': at these sizes Spark's fixed costs dominate.)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

N_NUMERIC, N_CATEGORICAL = 20, 5
CHUNK = 1_000_000  # rows per Parquet file written
LEGACY_METHODS = ("wasserstein", "psi", "jensenshannon", "chisquare")
# --- data -----------------------------------------------------------------------------------


def column_names() -> tuple[list[str], list[str]]:
    return [f"num_{i}" for i in range(N_NUMERIC)], [f"cat_{j}" for j in range(N_CATEGORICAL)]


def all_columns() -> list[str]:
    numeric, categorical = column_names()
    return [*numeric, *categorical]


# the pandas engine's budget in the scale section: the Spark driver's heap (full); quick's
# window is small, so its budget is too (below 128 MB glibc cannot even start threads)
FULL = {"current": 10_000_000, "reference": 1_000_000, "columns": all_columns(),
        "legacy_rows": 200_000,
        "legacy_columns": all_columns(), "timeout": 1800,
        "scale_rows": 50_000_000, "scale_columns": all_columns(), "scale_memory": "1g",
        "pandas_limit": "1g", "batch_rows": 5_000_000, "scaling_rows": 2_000_000,
        "legacy_window_timeout": 1200}  # fmt: skip
QUICK = {"current": 20_000, "reference": 10_000,
         "columns": ["num_0", "num_1", "num_3", "num_4", "cat_0", "cat_4"], "legacy_rows": 5_000,
         "legacy_columns": ["num_1"], "timeout": 90,
         "scale_rows": 3_000_000, "scale_columns": ["num_1", "cat_1"], "scale_memory": "512m",
         "pandas_limit": "128m", "batch_rows": 50_000, "scaling_rows": 20_000,
         "legacy_window_timeout": 120}  # fmt: skip


def make_chunk(rows: int, *, shifted: bool, seed: int):
    """One seeded pyarrow table: five numeric shapes, string categories, missing values."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    data = {}
    for i, name in enumerate(column_names()[0]):
        shift = 0.3 * (shifted and i % 3 == 0)
        kind = i % 5
        if kind == 0:
            values = rng.normal(shift, 1.0, rows)
        elif kind == 1:
            values = rng.gamma(2.0 + shift, 1.5, rows)
        elif kind == 2:
            values = rng.uniform(0.0, 10.0 + 3 * shift, rows)
        elif kind == 3:  # four values: Evidently's rule tests it like a category
            values = rng.choice(4, rows, p=[0.4, 0.3, 0.2 - shift / 3, 0.1 + shift / 3]) * 1.0
        else:  # counts: many ties
            values = rng.poisson(3.0 + shift, rows) * 1.0
        values[rng.random(rows) < (0.1 if i % 4 == 0 else 0.02)] = np.nan
        data[name] = pa.array(values, from_pandas=True)
    for j, name in enumerate(column_names()[1]):
        levels = pa.array([f"level_{k}" for k in range(3 + 10 * j)] + ["unseen"])
        weights = np.linspace(1.0, 2.0 + (0.4 * shifted * (j % 2)), len(levels) - 1)
        weights = np.append(weights, weights.sum() * 0.01 * (shifted and j == 4))
        codes = rng.choice(len(levels), rows, p=weights / weights.sum())
        mask = rng.random(rows) < 0.03
        indices = pa.array(codes.astype("int32"), mask=mask)
        data[name] = pa.DictionaryArray.from_arrays(indices, levels).cast(pa.string())
    return pa.table(data)


def write_dataset(folder: Path, rows: int, *, shifted: bool, seed: int) -> Path:
    """`rows` rows as Parquet files of up to CHUNK rows, each chunk seeded on its own."""
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    for part, start in enumerate(range(0, rows, CHUNK)):
        table = make_chunk(min(CHUNK, rows - start), shifted=shifted, seed=seed * 1000 + part)
        pq.write_table(table, folder / f"part-{part:05d}.parquet")
    return folder


def slice_dataset(source: Path, folder: Path, rows: int, columns: list[str]) -> Path:
    """The first `rows` rows of some columns of a dataset, as its own Parquet file."""
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    table = ds.dataset(source).head(rows, columns=columns)
    pq.write_table(table, folder / "part-00000.parquet")
    return folder


# --- one measurement per process ------------------------------------------------------------


def specs_and_options(run: dict):
    """The run's columns (all by default) as ColumnSpecs, and its methods as options."""
    from mm_platform.monitoring.results import ColumnOptions, ColumnSpec

    names = run.get("columns") or all_columns()
    specs = [ColumnSpec(c, "num" if c.startswith("num") else "cat") for c in names]
    options = {c: ColumnOptions(method=m) for c, m in (run.get("methods") or {}).items()}
    return specs, options


def jvm_peak_kb() -> int:
    """The peak resident memory (VmHWM) of the java processes this process started."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    peak, todo = 0, list(children.get(os.getpid(), []))
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if "Name:\tjava" in status:
            line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
            peak = max(peak, int(line.split()[1]))
    return peak


def start_spark(master: str, memory: str | None):
    from mm_platform.project.config import Spark
    from mm_platform.spark import session

    conf = {"spark.sql.shuffle.partitions": "8"}
    if memory:
        conf["spark.driver.memory"] = memory
    return session(Spark(master=master, conf=conf, app_name="bench-spark"))


def side_ours(job: dict) -> dict:
    """Our Spark engine on Parquet folders, for each of `job["runs"]`."""
    from mm_platform.monitoring.spark_drift import compute_spark

    spark = start_spark(job["master"], job.get("memory"))
    out = []
    for run in job["runs"]:
        specs, options = specs_and_options(run)
        start = time.perf_counter()
        names = [spec.name for spec in specs]
        reference = spark.read.parquet(run["reference"]).select(*names)
        current = spark.read.parquet(run["current"]).select(*names)
        result = compute_spark(reference, current, specs, options=options)
        out.append(outcome(result, time.perf_counter() - start))
    return {"runs": out, "jvm_peak_kb": jvm_peak_kb()}


def side_pandas(job: dict) -> dict:
    """The pandas engine, reading the same Parquet folders; optionally with a memory cap."""
    import pandas as pd

    from mm_platform.monitoring.drift import compute

    if job.get("limit_bytes"):  # the budget on top of what the imports already take
        resource.setrlimit(resource.RLIMIT_AS, (vm_size() + job["limit_bytes"],) * 2)
    out = []
    for run in job["runs"]:
        specs, options = specs_and_options(run)
        start = time.perf_counter()
        try:
            names = [spec.name for spec in specs]
            ref = pd.read_parquet(run["reference"], columns=names)
            cur = pd.read_parquet(run["current"], columns=names)
            read = time.perf_counter() - start
            result = compute(ref, cur, specs, options=options)
        except MemoryError as exc:  # pyarrow's ArrowMemoryError is one too
            seconds = time.perf_counter() - start
            return {"runs": [{"failed": f"{type(exc).__name__}: {str(exc)[:120]}",
                              "seconds": seconds}]}  # fmt: skip
        del ref, cur
        out.append({**outcome(result, time.perf_counter() - start), "read_seconds": read})
    return {"runs": out}


def side_legacy(job: dict) -> dict:
    """Evidently's legacy Spark engine: DataDriftTable with each column's method given."""
    from evidently.legacy.metrics import DataDriftTable
    from evidently.legacy.pipeline.column_mapping import ColumnMapping
    from evidently.legacy.report import Report
    from evidently.legacy.spark.engine import SparkEngine

    spark = start_spark(job["master"], job.get("memory"))
    out = []
    for run in job["runs"]:
        specs, _ = specs_and_options(run)
        numeric = [s.name for s in specs if s.kind == "num"]
        categorical = [s.name for s in specs if s.kind == "cat"]
        table = DataDriftTable(columns=[*numeric, *categorical], per_column_stattest=run["methods"])
        report = Report(metrics=[table])
        start = time.perf_counter()
        report.run(
            reference_data=spark.read.parquet(run["reference"]),
            current_data=spark.read.parquet(run["current"]),
            column_mapping=ColumnMapping(numerical_features=numeric,
                                         categorical_features=categorical),
            engine=SparkEngine,
        )  # fmt: skip
        columns = table.get_result().drift_by_columns
        out.append({"seconds": time.perf_counter() - start,
                    "scores": {c: float(r.drift_score) for c, r in columns.items()},
                    "methods": {c: r.stattest_name for c, r in columns.items()}})  # fmt: skip
    return {"runs": out, "jvm_peak_kb": jvm_peak_kb()}


def outcome(result, seconds: float) -> dict:
    return {"seconds": seconds,
            "scores": {c.spec.name: float(c.score) for c in result.columns},
            "methods": {c.spec.name: c.method for c in result.columns}}  # fmt: skip


def peak_rss_kb() -> int:
    """This process's peak resident memory (VmHWM). Not ru_maxrss: Linux carries a
    parent's peak into a child across fork and exec, so a fresh process would report at
    least the peak of the process that started it."""
    status = Path("/proc/self/status").read_text()
    return int(next(x for x in status.splitlines() if x.startswith("VmHWM:")).split()[1])


def vm_size() -> int:
    status = Path("/proc/self/status").read_text()
    return int(next(x for x in status.splitlines() if x.startswith("VmSize:")).split()[1]) * 1024


SIDES = {"ours": side_ours, "pandas": side_pandas, "legacy": side_legacy}


def run_side(name: str, job_file: str) -> None:
    os.environ["DO_NOT_TRACK"] = "1"
    import warnings

    warnings.simplefilter("ignore")
    job = json.loads(Path(job_file).read_text())
    record = SIDES[name](job)
    record["python_peak_kb"] = peak_rss_kb()
    Path(job["out"]).write_text(json.dumps(record))


def measure(name: str, job: dict, folder: Path, timeout: float | None = None) -> dict:
    """Run one side in a fresh process (its own session, so a timeout kills its JVM too)."""
    job_file = folder / f"job-{name}-{time.monotonic_ns()}.json"
    job["out"] = str(job_file.with_suffix(".out.json"))
    job_file.write_text(json.dumps(job))
    process = subprocess.Popen(
        [sys.executable, __file__, "--side", name, "--job", str(job_file)],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    start = time.perf_counter()
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return {"error": f"no result after {timeout:.0f} s (stopped)",
                "wall": time.perf_counter() - start}  # fmt: skip
    if process.returncode != 0:  # the whole stderr is kept: the data folder is removed
        kept = Path(tempfile.gettempdir()) / f"mm-bench-spark-{job_file.stem}.stderr"
        kept.write_text(stderr)
        lines = [x for x in stderr.splitlines() if "Exception" in x or "Error" in x]
        last = (lines or [x for x in stderr.splitlines() if x.strip()] or [""])[-1]
        return {"error": f"exit {process.returncode} after {time.perf_counter() - start:.0f} s: "
                         f"{last.strip()[-200:]} (stderr: {kept})",
                "wall": time.perf_counter() - start}  # fmt: skip
    return {**json.loads(Path(job["out"]).read_text()), "wall": time.perf_counter() - start}


# --- the sections ---------------------------------------------------------------------------


def legacy_methods() -> dict[str, str]:
    """Each column's method among the four the legacy engine has, every method used."""
    numeric, categorical = column_names()
    methods = {c: "psi" if i % 5 == 2 else "wasserstein" for i, c in enumerate(numeric)}
    cat_methods = ["jensenshannon", "jensenshannon", "jensenshannon", "chisquare", "psi"]
    return {**methods, **dict(zip(categorical, cat_methods, strict=True))}


def max_error(side: dict, exact: dict, methods: dict[str, str] | None = None) -> dict[str, float]:
    """The largest |score - exact score| over the columns, per method (and "all")."""
    errors: dict[str, float] = {}
    for column, score in exact["scores"].items():
        method = (methods or exact["methods"])[column]
        error = abs(side["scores"][column] - score)
        errors[method] = max(errors.get(method, 0.0), error)
        errors["all"] = max(errors.get("all", 0.0), error)
    return errors


def mb(kb: float) -> str:
    return f"{kb / 1024:,.0f} MB" if kb else "-"


def seconds(side: dict, index: int = 0) -> str:
    if "error" in side:
        return side["error"]
    run = side["runs"][index]
    return run.get("failed") or f"{run['seconds']:.1f} s"


def accuracy(sizes: dict, data: dict, folder: Path, figures: dict) -> None:
    """Ours and the pandas engine on the whole window, the three engines on the slice."""
    main_run = {"current": str(data["current"]), "reference": str(data["reference"]),
                "columns": sizes["columns"]}  # fmt: skip
    slice_run = {"current": str(data["current_slice"]), "reference": str(data["reference_slice"]),
                 "columns": sizes["legacy_columns"],
                 "methods": {c: legacy_methods()[c] for c in sizes["legacy_columns"]}}  # fmt: skip
    job = {"master": "local[2]", "runs": [slice_run, main_run]}
    ours = measure("ours", dict(job), folder)
    pandas = measure("pandas", {"runs": [slice_run, main_run]}, folder)
    legacy = measure("legacy", {"master": "local[2]", "memory": "4g", "runs": [slice_run]},
                     folder, timeout=sizes["timeout"])  # fmt: skip
    for name, side in (("ours", ours), ("pandas", pandas)):
        if "error" in side:
            raise SystemExit(f"{name}: {side['error']}")
    exact_main, exact_slice = pandas["runs"][1], pandas["runs"][0]
    assert ours["runs"][1]["methods"] == exact_main["methods"], "the engines chose other tests"
    ours_error = max_error(ours["runs"][1], exact_main)["all"]
    print(f"\n## Accuracy and speed: {sizes['current']:,} current rows against "
          f"{sizes['reference']:,} reference rows, {len(sizes['columns'])} columns, Parquet, "
          "default tests")  # fmt: skip
    print("| engine | time | read (of it) | Python peak | JVM peak | max score error |")
    print("|---|---|---|---|---|---|")
    print(f"| mm Spark, local[2] | {seconds(ours, 1)} | | {mb(ours['python_peak_kb'])} "
          f"| {mb(ours['jvm_peak_kb'])} | {ours_error:.1e} |")  # fmt: skip
    print(f"| mm pandas (exact) | {seconds(pandas, 1)} | {exact_main['read_seconds']:.1f} s "
          f"| {mb(pandas['python_peak_kb'])} | - | 0 |")  # fmt: skip
    speed = exact_main["seconds"] / ours["runs"][1]["seconds"]
    figures["main"] = {"ours": ours["runs"][1]["seconds"], "pandas": exact_main["seconds"],
                       "error": ours_error, "ours_python": ours["python_peak_kb"],
                       "ours_jvm": ours["jvm_peak_kb"], "pandas_python": pandas["python_peak_kb"],
                       "tests": sorted(set(exact_main["methods"].values()))}  # fmt: skip
    print(f"Spark vs pandas: {speed:.2f}x the speed; tests used: "
          f"{', '.join(figures['main']['tests'])}")  # fmt: skip
    legacy_table(sizes, ours, pandas, legacy, exact_slice, figures)


def error_row(name: str, time_text: str, side: dict, errors: dict[str, float]) -> None:
    """One engine's line: its time, JVM peak and largest error per legacy method."""
    print(f"| {name} | {time_text} | {mb(side.get('jvm_peak_kb', 0))} | "
          + " | ".join(f"{errors[m]:.1e}" if m in errors else "-" for m in LEGACY_METHODS)
          + " |")  # fmt: skip


def legacy_table(sizes, ours, pandas, legacy, exact_slice, figures) -> None:
    methods = legacy_methods()
    print(f"\n## Against Evidently's legacy Spark engine: {sizes['legacy_rows']:,} rows a side, "
          f"{len(sizes['legacy_columns'])} columns, each column's method given to all three "
          "engines")  # fmt: skip
    print("| engine | time | JVM peak | max error: wasserstein | psi | jensenshannon "
          "| chisquare |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    rows = [("mm Spark, local[2]", ours, ours["runs"][0]),
            ("mm pandas (exact)", pandas, exact_slice)]  # fmt: skip
    if "error" not in legacy:
        rows.append(("Evidently legacy Spark, local[2], 4 GB", legacy, legacy["runs"][0]))
    for name, side, run in rows:
        error_row(name, f"{run['seconds']:.1f} s", side, max_error(run, exact_slice, methods))
    if "error" in legacy:
        print(f"| Evidently legacy Spark, local[2], 4 GB | {legacy['error']} | | | | | |")
        figures["legacy"] = {"error": legacy["error"], "ours": ours["runs"][0]["seconds"]}
        return
    errors = max_error(legacy["runs"][0], exact_slice, methods)
    ratio = legacy["runs"][0]["seconds"] / ours["runs"][0]["seconds"]
    figures["legacy"] = {"ours": ours["runs"][0]["seconds"],
                         "legacy": legacy["runs"][0]["seconds"], "errors": errors,
                         "ours_error": max_error(ours["runs"][0], exact_slice)["all"]}  # fmt: skip
    worst = max((m for m in LEGACY_METHODS if m in errors), key=errors.__getitem__)
    print(f"legacy vs ours: {ratio:.1f}x our time; its largest error {errors['all']:.2e} "
          f"({worst})")  # fmt: skip


def legacy_window(sizes: dict, data: dict, folder: Path, figures: dict) -> None:
    """The legacy engine on the whole window (full: 10M against 1M rows), each column's
    method among its four given to all three engines, the legacy one under a time limit."""
    methods = {c: legacy_methods()[c] for c in sizes["columns"]}
    run = {"current": str(data["current"]), "reference": str(data["reference"]),
           "columns": sizes["columns"], "methods": methods}  # fmt: skip
    ours = measure("ours", {"master": "local[2]", "runs": [run]}, folder)
    pandas = measure("pandas", {"runs": [run]}, folder)
    limit = sizes["legacy_window_timeout"]
    legacy = measure("legacy", {"master": "local[2]", "memory": "4g", "runs": [run]}, folder,
                     timeout=limit)  # fmt: skip
    for name, side in (("ours", ours), ("pandas", pandas)):
        if "error" in side:
            raise SystemExit(f"{name}: {side['error']}")
    exact = pandas["runs"][0]
    print(f"\n## The legacy engine on the whole window: {sizes['current']:,} rows against "
          f"{sizes['reference']:,}, {len(sizes['columns'])} columns, methods given, "
          f"legacy stopped after {limit:,} s")  # fmt: skip
    print("| engine | time | JVM peak | max error: wasserstein | psi | jensenshannon "
          "| chisquare |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    rows = [("mm Spark, local[2]", ours), ("mm pandas (exact)", pandas)]
    if "error" not in legacy:
        rows.append(("Evidently legacy Spark, local[2], 4 GB", legacy))
    for name, side in rows:
        error_row(name, seconds(side), side, max_error(side["runs"][0], exact, methods))
    if "error" in legacy:
        print(f"| Evidently legacy Spark, local[2], 4 GB | {legacy['error']} | | | | | |")
    figures["legacy_window"] = {"ours": ours["runs"][0]["seconds"], "legacy": seconds(legacy)}


def pandas_bytes(folder: Path, rows: int, columns: list[str]) -> int:
    """What `rows` rows of the dataset take as a pandas frame (measured on its first file)."""
    import pandas as pd

    first = pd.read_parquet(sorted(folder.glob("*.parquet"))[0], columns=columns)
    return int(first.memory_usage(deep=True).sum() / len(first) * rows)


def to_bytes(memory: str) -> int:
    return int(memory[:-1]) * {"m": 2**20, "g": 2**30}[memory[-1].lower()]


def scale(sizes: dict, data: dict, folder: Path, figures: dict) -> None:
    """A window larger than the driver's memory: ours on a capped JVM, pandas capped too."""
    rows, memory, columns = sizes["scale_rows"], sizes["scale_memory"], sizes["scale_columns"]
    window = write_dataset(folder / "scale", rows, shifted=True, seed=3)
    need = pandas_bytes(window, rows, columns)
    limit = to_bytes(sizes["pandas_limit"])
    run = {"current": str(window), "reference": str(data["reference"]), "columns": columns}
    ours = measure("ours", {"master": "local[2]", "memory": memory, "runs": [run]}, folder)
    # under the cap it may fail, or hang (a thread that could not start is waited for)
    pandas = measure("pandas", {"runs": [run], "limit_bytes": limit}, folder,
                     timeout=sizes["timeout"])  # fmt: skip
    shutil.rmtree(window)
    print(f"\n## Scale: {rows:,} current rows against {sizes['reference']:,}, {len(columns)} "
          f"columns; as pandas frames the window alone takes {need / 2**20:,.0f} MB")  # fmt: skip
    print("| engine | memory it may use | outcome | Python peak | JVM peak |")
    print("|---|---|---|---|---|")
    print(f"| mm Spark, local[2] | spark.driver.memory={memory} | {seconds(ours)} | "
          f"{mb(ours.get('python_peak_kb', 0))} | {mb(ours.get('jvm_peak_kb', 0))} |")  # fmt: skip
    print(f"| mm pandas | {limit / 2**20:,.0f} MB over its imports (RLIMIT_AS) | "
          f"{seconds(pandas)} | {mb(pandas.get('python_peak_kb', 0))} | - |")  # fmt: skip
    figures["scale"] = {"rows": rows, "memory": memory, "need_mb": need / 2**20,
                        "limit_mb": limit / 2**20, "ours": seconds(ours),
                        "pandas": seconds(pandas)}  # fmt: skip


def scaling(sizes: dict, data: dict, folder: Path, figures: dict) -> None:
    """The same drift (the first `scaling_rows` of the window against the reference, every
    column) on local[1] and local[2], each in its own JVM, one core's run first."""
    rows = sizes["scaling_rows"]
    window = slice_dataset(data["current"], folder / "scaling", rows, sizes["columns"])
    run = {"current": str(window), "reference": str(data["reference"]),
           "columns": sizes["columns"]}  # fmt: skip
    one = measure("ours", {"master": "local[1]", "runs": [run]}, folder)
    two = measure("ours", {"master": "local[2]", "runs": [run]}, folder)
    for name, side in (("local[1]", one), ("local[2]", two)):
        if "error" in side:
            raise SystemExit(f"{name}: {side['error']}")
    t1, t2 = one["runs"][0]["seconds"], two["runs"][0]["seconds"]
    print(f"\n## Scaling: {rows:,} current rows against {sizes['reference']:,}, "
          f"{len(sizes['columns'])} columns, on local[1] and local[2]")  # fmt: skip
    print("| local[1] | local[2] | speed-up | per core |")
    print("|---|---|---|---|")
    print(f"| {t1:.1f} s | {t2:.1f} s | {t1 / t2:.2f}x | {t1 / t2 / 2:.2f} |")
    figures["scaling"] = {"rows": rows, "one": t1, "two": t2}


BATCH_PROJECT = """\
name: bench_batch
task: regression
dataset: {source: synthetic, generator: friedman1, n_samples: 2000, n_features: 10, noise: 1.0}
features: {scale: standard}
candidates: [{estimator: ridge, params: {alpha: [1.0]}}]
selection: {metric: rmse}
split: {cv_folds: 3}
seed: 7
"""


def mm_command(*args: str, cwd: Path) -> float:
    """Run `mm ARGS` in `cwd`; its wall time in seconds."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "mm_platform", *args], cwd=cwd,
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"mm {' '.join(args)}: {done.stderr.strip()[-400:]}")
    return time.perf_counter() - start


def batch(sizes: dict, folder: Path, figures: dict, quick: bool) -> None:
    """`mm predict --engine spark` (spark_udf) against `mm predict` on the same Parquet."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    work = folder / "batch"
    work.mkdir()
    (work / "bench_batch.yaml").write_text(BATCH_PROJECT)
    mm_command("train", "bench_batch.yaml", cwd=work)
    names = signature_names(work)
    rows = sizes["batch_rows"]
    counts = {"small": 1_000, "full": rows} if not quick else {"full": rows}
    times: dict[str, dict[str, float]] = {}
    for label, count in counts.items():
        source = work / f"input-{label}"
        source.mkdir()
        rng = np.random.default_rng(11)
        for part, start in enumerate(range(0, count, CHUNK)):
            n = min(CHUNK, count - start)
            table = pa.table({c: rng.uniform(0, 1, n) for c in names})
            pq.write_table(table, source / f"part-{part:05d}.parquet")
        times[label] = {
            "spark": mm_command("predict", "bench_batch.yaml", str(source), "--engine", "spark",
                                "--output", str(work / f"spark-{label}"), "--no-log", cwd=work),
            "pandas": mm_command("predict", "bench_batch.yaml", str(source),
                                 "--output", str(work / f"pandas-{label}.parquet"), "--no-log",
                                 cwd=work),
        }  # fmt: skip
    print(f"\n## Batch scoring: {rows:,} rows of 10 features, a ridge model, --no-log")
    print("| engine | command time | rows/s (whole command) | rows/s (less a 1,000-row run) |")
    print("|---|---|---|---|")
    figures["batch"] = {"rows": rows}
    for engine, name in (("spark", "mm predict --engine spark (spark_udf, local[2])"),
                         ("pandas", "mm predict (pandas)")):  # fmt: skip
        whole = times["full"][engine]
        marginal = (rows - 1_000) / (whole - times["small"][engine]) if "small" in times else None
        figures["batch"][engine] = marginal or rows / whole
        print(
            f"| {name} | {whole:.1f} s | {rows / whole:,.0f} | "
            + (f"{marginal:,.0f} |" if marginal else "- |")
        )


def signature_names(work: Path) -> list[str]:
    """The registered model's input columns, from its signature."""
    code = ("import mlflow; info = mlflow.models.get_model_info('models:/bench_batch@champion');"
            "print(','.join(info.signature.inputs.input_names()))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], cwd=work, capture_output=True,
                          text=True, check=True)  # fmt: skip
    return done.stdout.strip().split(",")


def summary(sizes: dict, figures: dict) -> None:
    """One markdown table with the figures the docs quote."""
    print("\n## Summary (paste into docs/benchmarks.md)")
    print("| measure | mm Spark (local[2]) | peer | ratio | target |")
    print("|---|---|---|---|---|")
    if "main" in figures:
        summary_accuracy(sizes, figures["main"], figures["legacy"])
    if "legacy_window" in figures:
        window = figures["legacy_window"]
        print(f"| drift, {sizes['current']:,} vs {sizes['reference']:,} rows, methods given: "
              f"time | {window['ours']:.1f} s | Evidently legacy Spark: {window['legacy']} | | "
              "faster |")  # fmt: skip
    if "scale" in figures:
        scale_ = figures["scale"]
        print(f"| {scale_['rows']:,}-row window ({scale_['need_mb']:,.0f} MB as pandas frames) "
              f"| {scale_['ours']} with spark.driver.memory={scale_['memory']} | pandas in "
              f"{scale_['limit_mb']:,.0f} MB: {scale_['pandas']} | | completes |")  # fmt: skip
    if "scaling" in figures:
        scaling_ = figures["scaling"]
        speedup = scaling_["one"] / scaling_["two"]
        print(f"| local[1] -> local[2], {scaling_['rows']:,} rows | {scaling_['one']:.1f} s "
              f"-> {scaling_['two']:.1f} s | | {speedup:.2f}x, {speedup / 2:.2f} per core "
              "| |")  # fmt: skip
    if "batch" in figures:
        batch_ = figures["batch"]
        print(f"| batch scoring, {batch_['rows']:,} rows | {batch_['spark']:,.0f} rows/s | "
              f"mm predict {batch_['pandas']:,.0f} rows/s | "
              f"{batch_['spark'] / batch_['pandas']:.2f}x | |")  # fmt: skip


def summary_accuracy(sizes: dict, main_: dict, legacy: dict) -> None:
    print(f"| drift, {sizes['current']:,} vs {sizes['reference']:,} rows: time | "
          f"{main_['ours']:.1f} s | pandas engine {main_['pandas']:.1f} s | "
          f"{main_['pandas'] / main_['ours']:.2f}x the speed | |")  # fmt: skip
    print(f"| same: max score error vs the exact scores | {main_['error']:.1e} | pandas: exact "
          f"| | <= 1e-9: {'pass' if main_['error'] <= 1e-9 else 'FAIL'} |")  # fmt: skip
    print(f"| same: driver peak memory | Python {mb(main_['ours_python'])}, JVM "
          f"{mb(main_['ours_jvm'])} | pandas {mb(main_['pandas_python'])} | | |")  # fmt: skip
    if "legacy" in legacy:
        errors = legacy["errors"]
        print(f"| drift, {sizes['legacy_rows']:,} rows a side, {len(sizes['legacy_columns'])} "
              f"columns: time | {legacy['ours']:.1f} s | Evidently legacy Spark "
              f"{legacy['legacy']:.1f} s | {legacy['legacy'] / legacy['ours']:.1f}x faster | "
              f"faster: {'pass' if legacy['legacy'] > legacy['ours'] else 'FAIL'} |")  # fmt: skip
        print(f"| same: max score error | {legacy['ours_error']:.1e} | legacy "
              f"{errors['all']:.1e} (Wasserstein {errors.get('wasserstein', 0):.1e}) | | "
              f"<= 1e-9: {'pass' if legacy['ours_error'] <= 1e-9 else 'FAIL'} |")  # fmt: skip
    else:
        print(f"| drift, {sizes['legacy_rows']:,} rows a side: time | {legacy['ours']:.1f} s | "
              f"Evidently legacy Spark: {legacy['error']} | | |")  # fmt: skip


SECTIONS = {"accuracy": accuracy, "legacy-window": legacy_window, "scale": scale,
            "scaling": scaling, "batch": None}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small run that checks it works")
    order = ",".join(SECTIONS)
    parser.add_argument("--sections", default=order,
                        help=f"comma-separated, run in this order (default: {order})")  # fmt: skip
    parser.add_argument("--side", choices=sorted(SIDES), help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        run_side(args.side, args.job)
        return
    sizes = QUICK if args.quick else FULL
    sections = [x.strip() for x in args.sections.split(",") if x.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"--sections: unknown {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    folder = Path(tempfile.mkdtemp(prefix="mm-bench-spark-"))
    try:
        start = time.perf_counter()
        whole = {"accuracy", "legacy-window"} & set(sections)
        current_rows = sizes["current"] if whole else sizes["scaling_rows"]
        data = {"reference": write_dataset(folder / "reference", sizes["reference"],
                                           shifted=False, seed=1),
                "current": write_dataset(folder / "current", current_rows,
                                         shifted=True, seed=2)}  # fmt: skip
        if "accuracy" in sections:
            for side in ("reference", "current"):
                data[f"{side}_slice"] = slice_dataset(
                    data[side], folder / f"{side}-slice", sizes["legacy_rows"],
                    sizes["legacy_columns"])  # fmt: skip
        print(
            f"{N_NUMERIC} numeric + {N_CATEGORICAL} categorical columns with missing values, "
            f"{os.cpu_count()} cores; data written in {time.perf_counter() - start:.0f} s"
        )
        figures: dict = {}
        for section in sections:
            if section == "batch":
                batch(sizes, folder, figures, args.quick)
            else:
                SECTIONS[section](sizes, data, folder, figures)
        summary(sizes, figures)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
