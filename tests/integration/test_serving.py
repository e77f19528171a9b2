"""Monitored serving through `mlflow models serve`, the prediction log, batch scoring, labels."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import requests

from mm_platform.serving.predlog.journal import recover
from mm_platform.serving.predlog.reader import read_window
from mm_platform.serving.predlog.writer import PredictionLogWriter
from tests.support import SEED_LINEAR, first_line, free_port, mm, write_project


def test_writer_appends_flushes_atomically_and_reads_back(tmp_path: Path) -> None:
    root = str(tmp_path / "log")
    writer = PredictionLogWriter(root, "m", "3", flush_seconds=60)
    ids = writer.append(pd.DataFrame({"x": [1.0, 2.0], "prediction": [10.0, 20.0]}))
    ids += writer.append(pd.DataFrame({"x": [3.0], "prediction": [30.0]}))
    assert len(set(ids)) == 3
    assert read_window(root, "predictions", "m").empty  # buffered, not yet written
    writer.close()
    files = list((tmp_path / "log" / "predictions" / "model=m").rglob("*"))
    parquet = [f for f in files if f.is_file()]
    assert len(parquet) == 1 and parquet[0].parent.name.startswith("date=")
    assert not any(f.name.startswith(".tmp-") for f in parquet)
    frame = read_window(root, "predictions", "m")
    assert list(frame["request_id"]) == ids
    assert list(frame["prediction"]) == [10.0, 20.0, 30.0]
    assert set(frame["model_version"]) == {"3"} and set(frame["model_name"]) == {"m"}
    later = pd.Timestamp.now(tz="UTC") + pd.Timedelta(minutes=1)
    assert read_window(root, "predictions", "m", start=later).empty


def test_files_with_int_and_float_columns_read_together(tmp_path: Path) -> None:
    from mm_platform.serving.predlog.writer import write_partition

    root = str(tmp_path / "log")
    write_partition(root, "labels", "m", pd.DataFrame({"request_id": ["a"], "label": [1]}))
    write_partition(root, "labels", "m", pd.DataFrame({"request_id": ["b"], "label": [1.5]}))
    assert sorted(read_window(root, "labels", "m")["label"]) == [1.0, 1.5]


def test_a_failed_write_keeps_the_records(tmp_path: Path) -> None:
    root = tmp_path / "log"
    writer = PredictionLogWriter(str(root), "m", "1", flush_seconds=60)
    blocker = root / "predictions"
    blocker.write_text("a file where the predictions folder should be")
    writer.append(pd.DataFrame({"x": [1.0], "prediction": [2.0]}))
    with pytest.raises(OSError, match="predictions"):
        writer.flush()
    assert writer.status()["buffered_rows"] == 1
    blocker.unlink()  # the disk is usable again: nothing was lost
    assert writer.flush() == 1
    writer.close()
    assert len(read_window(str(root), "predictions", "m")) == 1
    assert not list(root.rglob(".tmp-*"))


def test_half_written_files_are_invisible(tmp_path: Path) -> None:
    root = tmp_path / "log"
    writer = PredictionLogWriter(str(root), "m", "1")
    writer.append(pd.DataFrame({"x": [1.0], "prediction": [2.0]}))
    writer.close()
    folder = next((root / "predictions" / "model=m").iterdir())
    (folder / ".tmp-part-crashed.parquet").write_bytes(b"PAR1 half a file")
    assert len(read_window(str(root), "predictions", "m")) == 1


@pytest.fixture
def trained(store: str, tmp_path: Path) -> Path:
    from mm_platform.project.config import load_project
    from mm_platform.training.search import train_project

    path = write_project(tmp_path, SEED_LINEAR)
    assert train_project(load_project(path)).version == "1"
    return path


def test_batch_predict_logs_every_row_and_labels_join(trained: Path, tmp_path: Path) -> None:
    pd.DataFrame({"x": [0.5, 1.5, 9.0]}).to_csv(tmp_path / "batch.csv", index=False)
    result = mm("predict", str(trained), str(tmp_path / "batch.csv"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "scored 3 rows with tiny version 1" in result.stdout
    scored = pd.read_csv(tmp_path / "batch.predictions.csv")
    logged = read_window(str(tmp_path / "prediction_log"), "predictions", "tiny")
    assert sorted(logged["request_id"]) == sorted(scored["request_id"])

    labels = pd.DataFrame(
        {"request_id": [*scored["request_id"], scored["request_id"][0], "unknown-id", "x-0"],
         "label": [3.5, 6.5, 29.0, 3.6, 1.0, None]}
    )  # fmt: skip
    labels.to_csv(tmp_path / "labels.csv", index=False)
    result = mm("labels", str(trained), str(tmp_path / "labels.csv"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "ingested 3 labels for tiny" in result.stdout
    assert "1 duplicate request ids" in result.stdout
    assert "1 rows had no label value and were not stored" in result.stdout
    assert "1 labels name request ids not in the prediction log" in result.stdout
    assert "unknown-id" in result.stdout
    stored = read_window(str(tmp_path / "prediction_log"), "labels", "tiny")
    assert len(stored) == 3
    assert stored.set_index("request_id").loc[scored["request_id"][0], "label"] == 3.6


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pd.DataFrame({"z": [1.0]}), r"batch\.csv: columns do not match .*missing \['x'\]"),
        (pd.DataFrame({"x": [1.0], "z": [2.0]}), r"not in the model \['z'\]"),
        (pd.DataFrame({"x": ["abc"]}), r"batch\.csv: column 'x': 'abc' in row 0 is not a number"),
    ],
)
def test_batch_predict_bad_input(trained: Path, tmp_path: Path, frame, message: str) -> None:
    import re

    frame.to_csv(tmp_path / "batch.csv", index=False)
    result = mm("predict", str(trained), str(tmp_path / "batch.csv"), cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert re.search(message, result.stderr), result.stderr
    assert read_window(str(tmp_path / "prediction_log"), "predictions", "tiny").empty


@pytest.mark.slow
def test_mm_serve_logs_each_good_request_and_flushes_on_sigterm(trained: Path, tmp_path: Path):
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mm_platform", "serve", str(trained), "--port", str(port)],
        cwd=tmp_path, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/invocations"
    try:
        banner = first_line(server)
        assert "serving tiny version 1" in banner and url in banner
        ids = []
        for rows in ([[1.0]], [[2.0], [3.0]]):
            body = {"dataframe_split": {"columns": ["x"], "data": rows}}
            answer = requests.post(url, json=body, timeout=60)
            assert answer.status_code == 200
            ids += answer.json()["predictions"]["request_id"]
        for body in (
            {"dataframe_split": {"columns": ["z"], "data": [[1.0]]}},  # missing column
            {"dataframe_split": {"columns": ["x", "z"], "data": [[1.0, 2.0]]}},  # extra
            {"dataframe_split": {"columns": ["x"], "data": [["abc"]]}},  # mistyped
        ):
            bad = requests.post(url, json=body, timeout=60)
            assert bad.status_code == 400, bad.text
        server.send_signal(signal.SIGTERM)  # graceful: what was acknowledged must be written
        server.wait(60)
    finally:
        if server.poll() is None:
            server.kill()
    time.sleep(0.2)
    logged = read_window(str(tmp_path / "prediction_log"), "predictions", "tiny")
    assert sorted(logged["request_id"]) == sorted(ids)
    assert sorted(logged["x"]) == [1.0, 2.0, 3.0]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/ping", timeout=3)


def test_a_dead_writers_journal_is_recovered_once(tmp_path: Path) -> None:
    from mm_platform.serving.predlog import journal

    root = str(tmp_path / "log")
    writer = PredictionLogWriter(root, "m", "7", flush_seconds=3600)
    ids = writer.append(pd.DataFrame({"x": [1.0, 2.0], "prediction": [10.0, 20.0]}))
    ids += writer.append(pd.DataFrame({"x": [3.0], "prediction": [30.0]}))
    segment = writer._segment
    # the process dies: the lock goes, the file stays, a last record is cut short
    os.write(segment.fd, journal.MARKER + b"partial")
    os.close(segment.fd)
    writer._closed = True  # this writer never flushes again
    journal = tmp_path / "log" / "_journal" / "model=m"
    assert len(list(journal.glob("*.journal"))) == 1

    assert read_window(root, "predictions", "m").empty  # reading recovers nothing
    assert recover(root, "m") == 3
    logged = read_window(root, "predictions", "m")
    assert sorted(logged["request_id"]) == sorted(ids)
    assert set(logged["model_version"]) == {"7"} and sorted(logged["x"]) == [1.0, 2.0, 3.0]
    assert list(journal.glob("*.journal")) == []
    assert recover(root, "m") == 0
    assert len(read_window(root, "predictions", "m")) == 3  # not twice


def test_a_live_writers_journal_is_left_alone(tmp_path: Path) -> None:
    root = str(tmp_path / "log")
    writer = PredictionLogWriter(root, "m", "1", flush_seconds=3600)
    writer.append(pd.DataFrame({"x": [1.0], "prediction": [2.0]}))
    assert read_window(root, "predictions", "m").empty  # buffered by a live writer
    writer.close()
    assert len(read_window(root, "predictions", "m")) == 1
    assert list((tmp_path / "log" / "_journal" / "model=m").glob("*.journal")) == []


@pytest.mark.slow
def test_sigkill_under_load_loses_only_in_flight_requests(trained: Path, tmp_path: Path):
    import threading

    from mm_platform.serving.launcher import build_monitored_model, start_server

    log = tmp_path / "prediction_log"
    model_dir = build_monitored_model("tiny", "1", str(log), tmp_path / "monitored")
    port = free_port()
    # `mlflow models serve` and its uvicorn worker: their own process group, killed whole
    server = start_server(model_dir, host="127.0.0.1", port=port, output=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/invocations"
    acknowledged: list[str] = []
    in_flight_lost = [0]
    stop = threading.Event()

    def client(seed: int) -> None:
        session = requests.Session()
        i = 0
        while not stop.is_set():
            i += 1
            body = {"dataframe_split": {"columns": ["x"], "data": [[float(seed + i % 10)]] * 3}}
            try:
                answer = session.post(url, json=body, timeout=10)
            except requests.RequestException:
                in_flight_lost[0] += 1  # sent, never answered: the server died
                return
            acknowledged.extend(answer.json()["predictions"]["request_id"])

    try:
        clients = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for thread in clients:
            thread.start()
        time.sleep(3)  # several flush intervals: some requests are in files, some journalled
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the worker dies too; init reaps it
            try:
                os.killpg(server.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        stop.set()
        for thread in clients:
            thread.join(30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
    assert len(acknowledged) > 100 and in_flight_lost[0] <= 4
    visible = [p for p in log.rglob("*.parquet") if not p.name.startswith(".")]
    for path in visible:  # every visible file is whole
        pd.read_parquet(path)
    recover(str(log), "tiny")  # the dead server's journal
    logged = read_window(str(log), "predictions", "tiny")
    missing = set(acknowledged) - set(logged["request_id"])
    assert missing == set(), f"{len(missing)} acknowledged records lost"
    # at most the in-flight requests (3 rows each) are logged without an answer
    assert len(logged) - len(acknowledged) <= 3 * in_flight_lost[0]
    assert not logged["request_id"].duplicated().any()
    assert list((log / "_journal" / "model=tiny").glob("*.journal")) == []


def test_a_crash_after_a_retried_flush_writes_nothing_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mm_platform.serving.predlog import journal
    from mm_platform.serving.predlog import writer as predlog

    root = str(tmp_path / "log")
    writer = PredictionLogWriter(root, "m", "1", flush_seconds=3600)
    real_write = predlog.write_table
    failures = iter([OSError("disk full")])

    def flaky(*args: object, **kwargs: object) -> str:
        for exc in failures:
            raise exc
        return real_write(*args, **kwargs)

    monkeypatch.setattr(predlog, "write_table", flaky)
    ids = writer.append(pd.DataFrame({"x": [1.0], "prediction": [2.0]}))  # segment 1
    with pytest.raises(OSError, match="disk full"):
        writer.flush()
    ids += writer.append(pd.DataFrame({"x": [3.0], "prediction": [4.0]}))  # segment 2
    # the retry writes both segments' records, then the process dies before deleting them
    monkeypatch.setattr(journal.Segment, "remove", journal.Segment.close)
    assert writer.flush() == 2
    writer._closed = True
    journal = tmp_path / "log" / "_journal" / "model=m"
    assert len(list(journal.glob("*.journal"))) >= 2
    recover(root, "m")
    logged = read_window(root, "predictions", "m")
    assert sorted(logged["request_id"]) == sorted(ids)  # once each
    assert len(read_window(root, "predictions", "m")) == 2


def test_a_corrupt_journal_segment_is_set_aside_and_the_log_stays_readable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = str(tmp_path / "log")
    writer = PredictionLogWriter(root, "m", "1", flush_seconds=3600)
    writer.append(pd.DataFrame({"x": [1.0], "prediction": [2.0]}))
    writer.close()
    journal = tmp_path / "log" / "_journal" / "model=m"
    bad = journal / "wdeadx00000000-00000001.j1.v1.journal"
    bad.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00junk!")
    recover(root, "m")
    assert len(read_window(root, "predictions", "m")) == 1
    assert not bad.exists() and bad.with_name(bad.name + ".corrupt").exists()
    assert "has format j1, this mm reads j2; not read" in caplog.text
