"""Spark that cannot start, end to end: one `mm train`/`mm drift` on Spark each, one line
on stderr with the fix, exit status 2, no traceback, and nothing trained or logged.

Each case takes away one thing for real in the child process only: Java (a PATH with no
java on it, JAVA_HOME unset), PySpark (a `pyspark` package first on PYTHONPATH whose import
fails, as a missing one does), or the master (a port nothing listens on).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

from tests.support import SEED_LINEAR, free_port, mm, write_project


@pytest.fixture
def project(tmp_path: Path) -> Path:
    data = copy.deepcopy(SEED_LINEAR)
    data["spark"] = {"master": "local[1]"}
    return write_project(tmp_path, data)


@pytest.fixture(autouse=True)
def _no_spark_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """The child inherits this environment (mm() adds to it): no master or conf from CI."""
    monkeypatch.delenv("MM_SPARK_MASTER", raising=False)
    monkeypatch.delenv("MM_SPARK_CONF", raising=False)


def _train_on_spark(project: Path, **env: str) -> tuple[int, str]:
    done = mm("train", str(project), "--engine", "spark", cwd=project.parent, env=env)
    return done.returncode, done.stderr


def _without_pyspark(tmp_path: Path) -> str:
    """A PYTHONPATH whose first entry holds a `pyspark` package that fails to import."""
    shadow = tmp_path / "no-pyspark" / "pyspark"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError(\"No module named 'pyspark'\")\n")
    return os.pathsep.join(filter(None, [str(shadow.parent), os.environ.get("PYTHONPATH")]))


def _assert_one_line(status: int, stderr: str, project: Path) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert status == 2, stderr
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    assert not (project.parent / "mlflow.db").exists()  # it failed before any run
    assert not (project.parent / "mlruns").exists()
    return lines[0]


def test_no_java_is_one_line_naming_java_and_the_debian_package(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    empty = tmp_path / "bin"
    empty.mkdir()  # mm() runs sys.executable, so the child needs nothing on PATH
    status, stderr = _train_on_spark(project, PATH=str(empty))
    line = _assert_one_line(status, stderr, project)
    assert line.startswith("error: the Spark engine needs Java 17 or newer"), line
    assert "no java on PATH, JAVA_HOME unset" in line, line
    assert "apt-get install openjdk-17-jre-headless" in line, line


def test_a_java_home_without_java_is_named(project: Path, tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    home = tmp_path / "jdk"
    home.mkdir()
    status, stderr = _train_on_spark(project, PATH=str(empty), JAVA_HOME=str(home))
    line = _assert_one_line(status, stderr, project)
    assert f"JAVA_HOME={home} has no bin/java" in line, line


def test_no_pyspark_is_one_line_with_the_install_command(project: Path, tmp_path: Path) -> None:
    status, stderr = _train_on_spark(project, PYTHONPATH=_without_pyspark(tmp_path))
    line = _assert_one_line(status, stderr, project)
    assert "needs PySpark, which is not installed" in line, line
    assert 'pip install -e ".[spark]"' in line, line


@pytest.mark.parametrize("scheme", ["spark", "sc"])
def test_an_unreachable_master_is_one_line_naming_it(project: Path, scheme: str) -> None:
    master = f"{scheme}://127.0.0.1:{free_port()}"  # nothing listens there
    status, stderr = _train_on_spark(project, MM_SPARK_MASTER=master)
    line = _assert_one_line(status, stderr, project)
    assert f"the Spark master {master} does not answer at 127.0.0.1:" in line, line
    assert "Connection refused" in line and "MM_SPARK_MASTER" in line, line


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny project with a registered champion (trained on pandas) whose drift jobs run
    on Spark: `monitoring.engine: spark` in the project file."""
    folder = tmp_path_factory.mktemp("trained")
    data = copy.deepcopy(SEED_LINEAR)
    data["spark"] = {"master": "local[1]"}
    data["monitoring"] = {"engine": "spark"}
    path = write_project(folder, data)
    done = mm("train", str(path), cwd=folder)
    assert done.returncode == 0, done.stderr
    return path


def _drift_error(project: Path, *args: str, **env: str) -> str:
    done = mm("drift", str(project), *args, cwd=project.parent, env=env)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert len(errors) == 1 and done.stderr.strip().endswith(errors[0]), done.stderr
    return errors[0]


def test_drift_on_spark_from_the_project_file_without_java_says_so(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    empty = tmp_path / "bin"
    empty.mkdir()
    line = _drift_error(trained, PATH=str(empty))
    assert "needs Java 17 or newer" in line and "openjdk-17-jre-headless" in line, line


def test_drift_engine_spark_without_pyspark_says_how_to_install(
    trained: Path, tmp_path: Path
) -> None:
    line = _drift_error(trained, "--engine", "spark", PYTHONPATH=_without_pyspark(tmp_path))
    assert 'pip install -e ".[spark]"' in line, line


def test_drift_engine_spark_on_an_unreachable_master_names_it(trained: Path) -> None:
    master = f"spark://127.0.0.1:{free_port()}"
    line = _drift_error(trained, "--engine", "spark", MM_SPARK_MASTER=master)
    assert f"the Spark master {master} does not answer" in line, line


SUBMITTED = """
from mm_platform.project.spark import Spark
from mm_platform.spark import session

spark = session(Spark(master="local[2]", conf={"spark.sql.shuffle.partitions": "3"}))
print("MASTER", spark.sparkContext.master)
print("PARTITIONS", spark.conf.get("spark.sql.shuffle.partitions"))
print("UI", spark.conf.get("spark.ui.enabled"))
"""


@pytest.mark.slow
def test_spark_submit_keeps_its_master_and_conf(tmp_path: Path) -> None:
    """Under spark-submit (PySpark's own script), the master and --conf given to it win
    over the project's master and mm's defaults; the project's conf is still applied."""
    import subprocess
    import sys

    import pyspark

    script = tmp_path / "job.py"
    script.write_text(SUBMITTED)
    submit = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1",
           "PYSPARK_DRIVER_PYTHON": sys.executable}  # fmt: skip
    done = subprocess.run(
        [str(submit), "--master", "local[1]", "--conf", "spark.ui.enabled=true", str(script)],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "MASTER local[1]" in done.stdout
    assert "PARTITIONS 3" in done.stdout
    assert "UI true" in done.stdout
