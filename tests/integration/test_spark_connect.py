"""`mm drift --engine spark` through Spark Connect: a real Connect server (PySpark's own
`start-connect-server.sh`, local[2]) and `MM_SPARK_MASTER=sc://…` in a real `mm`
subprocess, against the pandas engine on the same logged window: the same scores."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_spark_drift_job import Trained, recorded, run, trained  # noqa: F401
from tests.support import free_port, mm

SCORE_TOLERANCE = 1e-9


@pytest.fixture(scope="module")
def connect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Spark Connect server on a free port for the module; its sc:// address."""
    try:
        import pyspark
        from pyspark.sql.connect.utils import check_dependencies

        check_dependencies()
    except ImportError as exc:
        if os.environ.get("MM_REQUIRE_SPARK"):
            raise
        pytest.skip(f"no Spark Connect client here: {exc}")
    home = Path(pyspark.__file__).parent
    folder = tmp_path_factory.mktemp("connect")
    port = free_port()
    env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOG_DIR": str(folder),
           "SPARK_PID_DIR": str(folder), "SPARK_LOCAL_IP": "127.0.0.1",
           "PYSPARK_PYTHON": sys.executable}  # fmt: skip
    script = home / "sbin"
    subprocess.run(
        ["bash", str(script / "start-connect-server.sh"), "--master", "local[2]",
         "--conf", f"spark.connect.grpc.binding.port={port}", "--conf", "spark.ui.enabled=false",
         "--conf", "spark.sql.shuffle.partitions=8"],
        env=env, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with __import__("socket").create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    logs = "\n".join(p.read_text()[-2000:] for p in folder.glob("*.out"))
                    pytest.fail(f"the Connect server did not listen on {port}:\n{logs}")
                time.sleep(0.5)
        yield f"sc://127.0.0.1:{port}"
    finally:
        subprocess.run(["bash", str(script / "stop-connect-server.sh")], env=env,
                       capture_output=True, timeout=120, check=False)  # fmt: skip


@pytest.mark.slow
def test_mm_drift_through_spark_connect_scores_as_the_pandas_engine(
    trained: Trained,  # noqa: F811
    connect_server: str,
) -> None:
    from mlflow import MlflowClient

    on_pandas = run(trained, "pandas")
    env = {"MM_SPARK_MASTER": connect_server,
           "MLFLOW_TRACKING_URI": os.environ["MLFLOW_TRACKING_URI"]}  # fmt: skip
    done = mm("drift", str(trained.folder / "project.yaml"), "--engine", "spark",
              "--start", trained.start.isoformat(), "--end", trained.end.isoformat(),
              cwd=trained.folder, env=env, timeout=600)  # fmt: skip
    assert done.returncode == 5, done.stderr[-3000:]  # drift, as on pandas
    assert "Traceback" not in done.stderr
    client = MlflowClient()
    experiment = client.get_experiment(client.get_run(on_pandas.run_id).info.experiment_id)
    (connect_run,) = client.search_runs(
        [experiment.experiment_id], "tags.`mm.engine` = 'spark'", max_results=1
    )
    assert connect_run.data.params["spark.master"] == connect_server
    on_pandas_metrics, _, _ = recorded(on_pandas)
    on_connect = connect_run.data.metrics
    assert set(on_connect) == set(on_pandas_metrics)
    for key, value in on_pandas_metrics.items():
        assert on_connect[key] == pytest.approx(value, abs=SCORE_TOLERANCE, rel=0), key
