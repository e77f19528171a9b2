"""Compression targets of issue 3, and the ONNX Runtime peer, measured in one run.

On projects/seed_mlp.yaml and projects/friedman.yaml, in a fresh SQLite store:
- int8 MLP: compression_ratio >= 3.5 with relative holdout loss <= 1 %.
- distilled tree-ensemble champion: >= 10x smaller, >= 5x faster, relative loss <= 2 %.
- peer: the same MLP converted with skl2onnx and quantized with onnxruntime's
  quantize_dynamic (int8); ours must be no larger and lose no more.

friedman's shipped candidates include an MLP, which wins its CV; the bench trains two
copies of it (each registered under its own name): one with only the MLP candidate, one
with only the tree-ensemble candidates.

--quick checks that the bench still works: a 1,000-row seed_mlp (int8 only) against the
ONNX peer, and a 2,000-row friedman with one small boosting parent and one boosting student
for distillation, with fewer folds and timing repeats. Its figures are not the targets'
(the same lines print all the same).

Needs the bench extra: pip install -e ".[bench]".  Run: python bench/compression.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import warnings
import zlib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _latency_ms(predict, rows, repeats: int = 15) -> float:
    predict(rows)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict(rows)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


def _onnx_peer(pipeline, X_hold, y_hold, workdir: Path) -> dict[str, float]:
    """skl2onnx conversion of the whole pipeline, then quantize_dynamic to int8."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    from mm_platform.modeling.metrics import score_predictions

    inputs = [(c, FloatTensorType([None, 1])) for c in X_hold.columns]
    fp32 = workdir / "model.onnx"
    int8 = workdir / "model.int8.onnx"
    fp32.write_bytes(
        convert_sklearn(pipeline, initial_types=inputs, target_opset=17).SerializeToString()
    )
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # as ours is timed: one thread
    options.inter_op_num_threads = 1
    sessions = {
        path: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        for path in (fp32, int8)
    }

    def predictor(path):
        def predict(frame):
            feeds = {c: frame[[c]].to_numpy(np.float32) for c in frame.columns}
            return sessions[path].run(None, feeds)[0].ravel()

        return predict

    rows = X_hold.iloc[np.arange(1000) % len(X_hold)]
    return {
        "size_bytes": int8.stat().st_size,
        # our arrays.bin is deflate-compressed; compress the peer's file the same way
        "deflated_size_bytes": len(zlib.compress(int8.read_bytes(), 6)),
        "fp32_size_bytes": fp32.stat().st_size,
        "rmse": score_predictions("regression", y_hold, predictor(int8)(X_hold))["rmse"],
        "fp32_rmse": score_predictions("regression", y_hold, predictor(fp32)(X_hold))["rmse"],
        "latency_ms_per_1k_rows": _latency_ms(predictor(int8), rows),
    }


def _payload_bytes(model, workdir: Path) -> int:
    """Bytes of our model payload alone (spec.json + arrays.bin), without MLflow packaging."""
    folder = workdir / "payload"
    model.save(folder)
    return sum(p.stat().st_size for p in folder.iterdir())


def _quick(friedman_trees, seed_mlp):
    """Small copies for --quick: fewer rows, folds, iterations, variants and timing repeats."""
    trees = friedman_trees.model_dump(exclude_none=True)
    trees["dataset"]["n_samples"] = 2000
    trees["split"]["cv_folds"] = 2
    trees["candidates"] = [{"estimator": "hist_gradient_boosting", "params": {"max_iter": [60]}}]
    trees["compression"] = {
        "latency_repeats": 3,
        "distill": {"students": [{"kind": "boosting", "n_estimators": 60, "max_depth": 3}]},
    }
    mlp = seed_mlp.model_dump(exclude_none=True)
    mlp["dataset"]["n_samples"] = 1000
    mlp["split"] = {"cv_folds": 2}
    mlp["candidates"][0]["params"].update(learning_rate_init=[0.01], max_iter=150)
    mlp["compression"] = {"latency_repeats": 3, "quantize": {"bits": [8], "per_channel": [False]}}
    kind = type(seed_mlp)
    return kind.model_validate(trees), kind.model_validate(mlp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small run that checks it works")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    tmp = Path(tempfile.mkdtemp(prefix="mm-bench-compress-"))
    os.chdir(tmp)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"

    import mlflow

    from mm_platform.compression import methods
    from mm_platform.compression.compile import compile_pipeline
    from mm_platform.compression.job import compress_project
    from mm_platform.data.sources import load_dataset
    from mm_platform.data.splits import split_holdout
    from mm_platform.modeling.metrics import relative_change as relative_loss
    from mm_platform.project.config import load_project
    from mm_platform.training.search import train_project

    seed_mlp = load_project(REPO / "projects" / "seed_mlp.yaml")
    friedman = load_project(REPO / "projects" / "friedman.yaml")
    friedman_mlp = friedman.model_copy(
        update={"name": "friedman_mlp",
                "candidates": [c for c in friedman.candidates if c.estimator == "mlp"]}
    )  # fmt: skip
    friedman_trees = friedman.model_copy(
        update={"name": "friedman_trees",
                "candidates": [c for c in friedman.candidates if c.estimator != "mlp"]}
    )  # fmt: skip
    int8_projects = [seed_mlp, friedman_mlp]
    if args.quick:
        friedman_trees, seed_mlp = _quick(friedman_trees, seed_mlp)
        int8_projects = [seed_mlp]
    report: dict[str, dict] = {}
    ok = True

    print("== int8 MLP (target: ratio >= 3.5, relative loss <= 1 %) and the ONNX Runtime peer")
    for project in int8_projects:
        trained = train_project(project)
        result = compress_project(project)
        int8 = next(v for v in result.variants if v.variant == "int8")
        parent = mlflow.sklearn.load_model(f"models:/{project.name}/{trained.version}")
        data = load_dataset(project)
        _, X_hold, _, y_hold = split_holdout(project, data)
        work = tmp / project.name
        work.mkdir()
        peer = _onnx_peer(parent, X_hold, y_hold, work)
        ours_payload = _payload_bytes(methods.quantize(parent, 8, per_channel=False), work)
        repack = compile_pipeline(parent)  # float64 in our format: what the format alone gives
        repack_payload = _payload_bytes(repack, work / "f64")
        parent_rmse = result.parent_metrics["holdout_rmse"]
        peer_loss = relative_loss("rmse", parent_rmse, peer["rmse"])
        m = int8.metrics
        passed = m["compression_ratio"] >= 3.5 and m["relative_loss"] <= 0.01
        # like for like: both deflate-compressed (our arrays.bin is; the .onnx protobuf is not)
        no_larger = ours_payload <= peer["deflated_size_bytes"]
        no_worse = m["relative_loss"] <= peer_loss
        ok &= passed and no_larger and no_worse
        print(
            f"-- {project.name}: parent v{trained.version} {trained.candidate}, "
            f"{result.parent_metrics['size_bytes']:,.0f} bytes, holdout_rmse {parent_rmse:.4f}"
        )
        print(
            f"   ours int8 artifact   {m['size_bytes']:>9,.0f} B  "
            f"ratio {m['compression_ratio']:5.1f}x  "
            f"loss {m['relative_loss']:+.3%}  {m['latency_ms_per_1k_rows']:.3f} ms/1k rows  "
            f"{'PASS' if passed else 'FAIL'}"
        )
        print(
            f"   ours int8 payload    {ours_payload:>9,} B  (spec.json + arrays.bin; "
            f"float64 repack payload {repack_payload:,} B: int8 alone "
            f"{repack_payload / ours_payload:.2f}x)"
        )
        fp32_loss = relative_loss("rmse", parent_rmse, peer["fp32_rmse"])
        print(
            f"   onnx int8 file       {peer['size_bytes']:>9,} B  "
            f"(deflated {peer['deflated_size_bytes']:,} B)  loss {peer_loss:+.3%}  "
            f"{peer['latency_ms_per_1k_rows']:.3f} ms/1k rows  (fp32 file "
            f"{peer['fp32_size_bytes']:,} B, loss {fp32_loss:+.3%})"
        )
        print(f"   ours vs peer: size {ours_payload / peer['deflated_size_bytes']:.2f}x deflated, "
              f"({'no larger' if no_larger else 'LARGER'}), loss "
              f"{'no more' if no_worse else 'MORE'}, latency "
              f"{m['latency_ms_per_1k_rows'] / peer['latency_ms_per_1k_rows']:.2f}x")  # fmt: skip
        report[project.name] = {
            "int8": m,
            "ours_payload_bytes": ours_payload,
            "repack_payload_bytes": repack_payload,
            "peer": peer,
            "peer_relative_loss": peer_loss,
            "parent": result.parent_metrics,
        }

    print(
        "\n== distilled tree-ensemble champion (target: >= 10x smaller, >= 5x faster, loss <= 2 %)"
    )
    trained = train_project(friedman_trees)
    result = compress_project(friedman_trees)
    print(f"-- friedman_trees: parent v{trained.version} {trained.candidate}, "
          f"{result.parent_metrics['size_bytes']:,.0f} bytes, "
          f"{result.parent_metrics['latency_ms_per_1k_rows']:.2f} ms/1k rows, "
          f"holdout_rmse {result.parent_metrics['holdout_rmse']:.4f}")  # fmt: skip
    best = None
    for v in result.variants:
        if v.method != "distill" or not v.made:
            continue
        m = v.metrics
        passed = m["compression_ratio"] >= 10 and m["speedup"] >= 5 and m["relative_loss"] <= 0.02
        best = best or (v.variant if passed else None)
        print(f"   {v.variant:<20} {m['size_bytes']:>9,.0f} B  "
              f"{m['compression_ratio']:6.1f}x smaller  "
              f"{m['speedup']:6.1f}x faster  loss {m['relative_loss']:+.3%}  "
              f"{'PASS' if passed else 'fail'}")  # fmt: skip
        report[f"friedman_trees/{v.variant}"] = m
    ok &= best is not None
    print(f"   distillation target: {'PASS (' + best + ')' if best else 'FAIL'}")

    out = REPO / "bench" / "results"
    if args.quick:
        print("\nquick run finished (small sizes: the targets apply to the full run)")
        return
    out.mkdir(exist_ok=True)
    (out / "compression.json").write_text(json.dumps(report, indent=2, default=float))
    print(f"\nall targets: {'PASS' if ok else 'FAIL'}   (details: {out / 'compression.json'})")


if __name__ == "__main__":
    main()
