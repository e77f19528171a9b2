"""The prediction log's storage: dead letters, a full disk, damaged files and journals,
journal safety, compaction and window reads; against real files (and a real tmpfs)."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import pickle
import shutil
import subprocess
import threading
import time
import warnings
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mm_platform.serving.predlog import journal, maintenance
from mm_platform.serving.predlog import store as logstore
from mm_platform.serving.predlog.journal import recover
from mm_platform.serving.predlog.reader import read_file, read_window, row_groups_in
from mm_platform.serving.predlog.writer import (
    LogUnavailable,
    PredictionLogWriter,
    compact,
    write_partition,
)
from tests.support import REPO
from tests.support.faults import Pause


def good(x: float, rows: int = 1) -> pd.DataFrame:
    return pd.DataFrame({"x": [x] * rows, "site": ["a"] * rows, "prediction": [2 * x] * rows})


def dead_letters(root: Path) -> list[dict]:
    folder = root / "_dead_letter" / "model=m"
    return [json.loads(line) for p in folder.glob("*.jsonl") for line in p.read_text().splitlines()]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


POISON = {
    "a string in a numeric column": pd.DataFrame({"x": [1.0, "abc"], "prediction": [1.0, 2.0]}),
    "an int beyond int64": pd.DataFrame({"x": [2**70], "prediction": [1.0]}),
    "an arbitrary object": pd.DataFrame({"x": [object()], "prediction": [1.0]}),
    "a column named like the log's own": pd.DataFrame({"timestamp": [1.0], "prediction": [1.0]}),
}


def test_poison_records_become_counted_dead_letters_and_never_block_the_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "log"
    writer = PredictionLogWriter(str(root), "m", "1", flush_seconds=0.02)
    journal_folder = root / "_journal" / "model=m"
    fds = open_fds()
    ids, refused = [], []
    for poison in POISON.values():
        ids += writer.append(good(1.0))
        refused += writer.append(poison)
        time.sleep(0.05)  # flushes run between the poisons
    # Arrow takes an empty struct, Parquet does not: refused at the flush, alone
    refused += writer.append(pd.DataFrame({"x": [{}], "prediction": [1.0]}))
    for i in range(1000):
        ids += writer.append(good(float(i), rows=1 + i % 3))
        assert len(list(journal_folder.iterdir())) <= 2  # no segment per failed flush
    writer.flush()
    status = writer.status()
    assert status["dead_letters"] == len(POISON) + 1 and status["healthy"]
    assert open_fds() <= fds + 1
    writer.close()

    logged = read_window(str(root), "predictions", "m")
    assert sorted(logged["request_id"]) == sorted(ids)
    letters = dead_letters(root)
    assert sorted(i for letter in letters for i in letter["request_ids"]) == sorted(refused)
    reasons = " | ".join(letter["reason"] for letter in letters)
    for expected in ("Could not convert 'abc'", "too large", "did not recognize Python value",
                     "one of the log's own columns", "cannot write Parquet"):  # fmt: skip
        assert expected in reasons
    assert "dead letters so far" in caplog.text
    assert list(journal_folder.iterdir()) == []


def test_records_of_different_types_are_both_logged(tmp_path: Path) -> None:
    root = str(tmp_path / "log")
    writer = PredictionLogWriter(root, "m", "1", flush_seconds=3600)
    first = writer.append(pd.DataFrame({"x": [1.5], "prediction": [1.0]}))
    second = writer.append(pd.DataFrame({"x": ["a string"], "prediction": [2.0]}))
    third = writer.append(pd.DataFrame({"x": [3], "prediction": [3.0]}))  # int: unifies
    writer.close()
    logged = read_window(root, "predictions", "m").set_index("request_id")
    assert logged.loc[first[0], "x"] == 1.5 and logged.loc[second[0], "x"] == "a string"
    assert logged.loc[third[0], "x"] == 3
    assert writer.status()["dead_letters"] == 0


def test_files_of_different_types_with_a_missing_column_are_read_without_a_warning(
    tmp_path: Path,
) -> None:
    root = str(tmp_path / "log")
    writer = PredictionLogWriter(root, "m", "1", flush_seconds=3600)
    first = writer.append(pd.DataFrame({"x": [1.5], "site": [None], "prediction": [1.0]}))
    writer.flush()  # two files: the types of x cannot be unified by Arrow
    second = writer.append(pd.DataFrame({"x": ["a string"], "site": [7.0], "prediction": [2.0]}))
    writer.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pandas' FutureWarning on all-missing columns
        logged = read_window(root, "predictions", "m").set_index("request_id")
    assert logged.loc[first[0], "x"] == 1.5 and logged.loc[second[0], "x"] == "a string"
    assert pd.isna(logged.loc[first[0], "site"]) and logged.loc[second[0], "site"] == 7.0
    assert logged["site"].dtype == "float64"  # as pandas decides today
    assert list(logged.columns[-3:]) == ["x", "site", "prediction"]


def test_too_much_waiting_is_refused_and_the_writer_recovers(tmp_path: Path) -> None:
    root = tmp_path / "log"
    writer = PredictionLogWriter(str(root), "m", "1", flush_seconds=0.05, max_buffered_bytes=4096)
    (root / "predictions").write_text("blocks every Parquet write")
    ids = []
    with pytest.raises(LogUnavailable, match="waiting to be written to Parquet, the limit"):
        for _ in range(1000):
            ids += writer.append(good(1.0, rows=10))
    assert not writer.healthy and "waiting" in writer.status()["reason"]
    assert writer.status()["buffered_rows"] == len(ids)
    (root / "predictions").unlink()
    deadline = time.monotonic() + 10
    while not writer.healthy and time.monotonic() < deadline:
        time.sleep(0.05)
    assert writer.healthy and writer.status()["buffered_rows"] == 0
    writer.close()
    assert sorted(read_window(str(root), "predictions", "m")["request_id"]) == sorted(ids)


@contextlib.contextmanager
def tmpfs(folder: Path, size: str):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs (a real full disk) needs root")
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def test_a_full_disk_refuses_requests_loses_none_it_acknowledged_and_heals(
    tmp_path: Path,
) -> None:
    with tmpfs(tmp_path / "disk", "2m") as disk:
        root = disk / "log"
        writer = PredictionLogWriter(str(root), "m", "1", flush_seconds=0.02)
        filler = disk / "filler"
        filler.write_bytes(b"\0" * 1_000_000)
        acknowledged, refusals = [], 0
        for i in range(20_000):
            try:
                acknowledged += writer.append(good(float(i), rows=20))
            except LogUnavailable as exc:
                assert "the request was not logged" in str(exc)
                refusals += 1
                if refusals >= 20:
                    break
        assert refusals >= 20 and len(acknowledged) > 1000
        time.sleep(0.3)  # the flush thread keeps failing meanwhile
        filler.unlink()  # space returns
        deadline = time.monotonic() + 20
        while not (writer.healthy and writer.status()["buffered_rows"] == 0):
            assert time.monotonic() < deadline, writer.status()
            time.sleep(0.05)
        acknowledged += writer.append(good(-1.0))
        writer.close()
        assert not list(root.rglob(".tmp-*"))
        logged = read_window(str(root), "predictions", "m")
        assert not logged["request_id"].duplicated().any()
        assert set(logged["request_id"]) == set(acknowledged)
        assert len(list((root / "_journal" / "model=m").iterdir())) == 0


def test_a_killed_writer_on_a_full_disk_is_recovered_without_loss(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "1m") as disk:
        root = disk / "log"
        writer = PredictionLogWriter(str(root), "m", "1", flush_seconds=3600)
        filler = disk / "filler"
        filler.write_bytes(b"\0" * 300_000)
        acknowledged = []
        with pytest.raises(LogUnavailable, match="No space left"):
            for i in range(100_000):
                acknowledged += writer.append(good(float(i), rows=50))
        with pytest.raises(OSError, match="No space left"):
            writer.flush()
        assert not list(root.rglob(".tmp-*"))
        writer._closed = True  # killed: the journal stays, its lock goes
        for segment in [writer._segment, *writer._unwritten]:
            if segment is not None:
                segment.close()
        filler.unlink()
        recover(str(root), "m")
        logged = read_window(str(root), "predictions", "m")
        assert sorted(logged["request_id"]) == sorted(acknowledged)


def write_segment(folder: Path, name: str, tables: list[pa.Table]) -> bytes:
    data = b"".join(bytes(journal.encode_record(t)) for t in tables)
    (folder / name).write_bytes(data)
    return data


def request(i: int) -> pa.Table:
    stamp = pd.Timestamp.now(tz="UTC").value
    return pa.table({"request_id": [f"r{i}-0"], "timestamp": pa.array([stamp], pa.timestamp(
        "ns", tz="UTC")), "x": [float(i)], "prediction": [1.0]})  # fmt: skip


class _Touch:
    """A pickle that creates a file when loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_a_crafted_pickle_in_the_journal_runs_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "log"
    folder = root / "_journal" / "model=m"
    folder.mkdir(parents=True)
    evidence = tmp_path / "pwned"
    payload = pickle.dumps(_Touch(evidence))
    assert not evidence.exists()
    old = folder / "wdeadx00000000-00000001.j1.v1.journal"
    old.write_bytes(len(payload).to_bytes(8, "little") + payload)
    disguised = folder / "wdeadx00000000-00000002.j2.v1.journal"
    disguised.write_bytes(payload)
    write_segment(folder, "wdeadx00000000-00000003.j2.v1.journal", [request(1)])
    caplog.set_level(logging.WARNING)
    PredictionLogWriter(str(root), "m", "1").close()  # writers recover on start
    assert len(read_window(str(root), "predictions", "m")) == 1
    assert not evidence.exists()
    assert old.with_name(old.name + ".corrupt").read_bytes().endswith(payload)
    assert disguised.with_name(disguised.name + ".corrupt").read_bytes() == payload
    lines = [r.getMessage() for r in caplog.records]
    assert sum(old.name in line and "format j1" in line for line in lines) == 1
    assert sum(disguised.name in line and "damaged" in line for line in lines) == 1


@pytest.mark.parametrize("damage", ["payload", "length", "marker", "cut short"])
def test_a_damaged_journal_record_is_set_aside_and_the_others_recovered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    root = tmp_path / "log"
    folder = root / "_journal" / "model=m"
    folder.mkdir(parents=True)
    records = [bytes(journal.encode_record(request(i))) for i in range(5)]
    broken = bytearray(records[2])
    if damage == "payload":
        broken[40] ^= 0xFF
    elif damage == "length":
        broken[5] ^= 0x10
    elif damage == "marker":
        broken[0:4] = b"XXXX"
    else:
        broken = broken[: len(broken) // 2]
    segment = folder / "wdeadx00000000-00000001.j2.v4.journal"
    segment.write_bytes(b"".join([*records[:2], bytes(broken), *records[3:]]))
    caplog.set_level(logging.WARNING)
    recover(str(root), "m")
    logged = read_window(str(root), "predictions", "m")
    assert sorted(logged["request_id"]) == ["r0-0", "r1-0", "r3-0", "r4-0"]
    assert set(logged["model_version"]) == {"4"}
    assert (folder / (segment.name + ".corrupt")).read_bytes() == bytes(broken)
    assert not segment.exists()
    lines = [r.getMessage() for r in caplog.records if segment.name in r.getMessage()]
    assert len(lines) == 1 and "4 intact records recovered" in lines[0]


def test_a_truncated_parquet_file_is_moved_aside_and_the_rest_still_reads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "log"
    good_file = write_partition(str(root), "predictions", "m", pd.DataFrame({"x": [1.0, 2.0]}))
    bad_file = Path(write_partition(str(root), "predictions", "m", pd.DataFrame({"x": [3.0]})))
    bad_file.write_bytes(bad_file.read_bytes()[:-20])
    caplog.set_level(logging.WARNING)
    assert sorted(read_window(str(root), "predictions", "m")["x"]) == [1.0, 2.0]
    assert sorted(read_window(str(root), "predictions", "m")["x"]) == [1.0, 2.0]
    assert not bad_file.exists() and Path(good_file).exists()
    moved = root / "_corrupt" / bad_file.relative_to(root)
    assert moved.exists()
    assert sum(bad_file.name in r.getMessage() for r in caplog.records) == 1
    assert pd.read_parquet(root / "predictions").shape[0] == 2  # plain pandas reads it too


def test_a_window_reads_only_the_days_it_overlaps(tmp_path: Path) -> None:
    root = tmp_path / "log"
    writer = PredictionLogWriter(str(root), "m", "1")
    today_ids = writer.append(good(1.0, rows=3))
    writer.close()
    old = pd.DataFrame({"request_id": ["old-0"], "x": [5.0],
                        "timestamp": [pd.Timestamp("2020-01-01 12:00", tz="UTC")]})  # fmt: skip
    path = write_partition(str(root), "predictions", "m", old)  # goes to its timestamp's day
    assert Path(path).parent.name == "date=2020-01-01"
    # two days after the day window below (a window also reads the day after it)
    trap = root / "predictions" / "model=m" / "date=2020-01-03" / "part-1-trap.parquet"
    trap.parent.mkdir()
    trap.write_bytes(b"not parquet: opening it would move it aside")
    now = pd.Timestamp.now(tz="UTC")
    window = read_window(str(root), "predictions", "m", start=now - pd.Timedelta(hours=1))
    assert sorted(window["request_id"]) == sorted(today_ids)
    assert trap.exists()  # never opened
    day = read_window(str(root), "predictions", "m", start=pd.Timestamp("2020-01-01"),
                       end=pd.Timestamp("2020-01-02"))  # fmt: skip
    assert list(day["request_id"]) == ["old-0"] and trap.exists()
    assert len(read_window(str(root), "predictions", "m")) == 4 and not trap.exists()


def many_small_files(root: Path, files: int = 60) -> list[str]:
    ids = []
    for i in range(files):
        writer = PredictionLogWriter(str(root), "m", "1", flush_seconds=3600)
        frame = good(float(i), rows=1 + i % 4)
        if i % 5 == 0:
            frame = frame.assign(x=frame["x"].astype("int64"))  # int files among float ones
        ids += writer.append(frame)
        writer.close()
    return ids


def parquet_files(root: Path) -> list[Path]:
    return [p for p in (root / "predictions").rglob("*.parquet") if not p.name.startswith(".")]


def test_compaction_merges_a_days_files_into_one_with_the_same_rows(tmp_path: Path) -> None:
    root = tmp_path / "log"
    many_small_files(root)
    before = read_window(str(root), "predictions", "m")
    result = compact(str(root), "m")
    assert (result.files_before, result.files_after, result.rows) == (60, 1, len(before))
    assert len(parquet_files(root)) == 1
    after = read_window(str(root), "predictions", "m")
    key = ["request_id"]
    pd.testing.assert_frame_equal(
        before.sort_values(key).reset_index(drop=True),
        after.sort_values(key).reset_index(drop=True),
    )
    assert compact(str(root), "m").files_after == 1  # nothing more to do


def test_a_reader_during_compaction_never_sees_a_row_twice_or_misses_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "log"
    expected = sorted(many_small_files(root))
    pause = Pause(tmp_path / "faults", "compaction:merged")  # merged file and sources visible
    for name, value in pause.env.items():
        monkeypatch.setenv(name, value)
    compaction = threading.Thread(target=compact, args=(str(root), "m"))
    compaction.start()
    try:
        seen = []
        deadline = time.monotonic() + 60
        while not pause.held():
            assert time.monotonic() < deadline, "compaction never merged"
            seen.append(sorted(read_window(str(root), "predictions", "m")["request_id"]))
        held = [sorted(read_window(str(root), "predictions", "m")["request_id"]) for _ in range(3)]
    finally:
        pause.release()
        compaction.join(60)
    assert len(parquet_files(root)) == 1  # the sources are gone now
    after = sorted(read_window(str(root), "predictions", "m")["request_id"])
    assert all(ids == expected for ids in [*seen, *held, after])


def test_journal_recovery_after_compaction_writes_nothing_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "log"
    ids = many_small_files(root, files=5)
    writer = PredictionLogWriter(str(root), "m", "1", flush_seconds=3600)
    ids += writer.append(good(7.0, rows=2))
    monkeypatch.setattr(journal.Segment, "remove", journal.Segment.close)
    writer.flush()  # written, then the process dies before deleting its segment
    writer._closed = True
    writer._segment.close()
    monkeypatch.undo()
    result = compact(str(root), "m")
    assert (result.files_before, result.files_after, result.left_for_later) == (6, 2, 1)
    recover(str(root), "m")
    assert sorted(read_window(str(root), "predictions", "m")["request_id"]) == sorted(ids)
    assert compact(str(root), "m").files_after == 1
    assert sorted(read_window(str(root), "predictions", "m")["request_id"]) == sorted(ids)


def test_reading_leaves_a_dead_writers_journal_for_an_explicit_recovery(tmp_path: Path) -> None:
    root = tmp_path / "log"
    folder = root / "_journal" / "model=m"
    folder.mkdir(parents=True)
    segment = folder / "wdeadx00000000-00000001.j2.v1.journal"
    data = write_segment(folder, segment.name, [request(1), request(2)])
    assert read_window(str(root), "predictions", "m").empty  # reading writes nothing
    assert segment.read_bytes() == data and not (root / "predictions").exists()
    assert recover(str(root), "m") == 2
    assert sorted(read_window(str(root), "predictions", "m")["request_id"]) == ["r1-0", "r2-0"]
    assert not segment.exists()


def test_recover_is_quiet_and_idempotent_without_dead_writers(tmp_path: Path) -> None:
    root = tmp_path / "log"
    writer = PredictionLogWriter(str(root), "m", "1", flush_seconds=3600)
    writer.append(good(1.0))
    assert recover(str(root), "m") == 0  # a live writer's journal is left alone
    writer.close()
    assert recover(str(root), "m") == 0


def test_a_window_inside_a_big_file_reads_only_its_row_groups(tmp_path: Path) -> None:
    stamps = pd.date_range("2026-01-01", periods=300_000, freq="s", tz="UTC")
    path = tmp_path / "big.parquet"
    pq.write_table(
        pa.table({"timestamp": stamps, "x": range(300_000)}), path, row_group_size=65_536
    )
    start, end = pd.Timestamp("2026-01-02", tz="UTC"), pd.Timestamp("2026-01-02 01:00", tz="UTC")
    parquet = pq.ParquetFile(path)
    assert row_groups_in(parquet, parquet.schema_arrow, start, end) == [1]
    table = read_file(pa.fs.LocalFileSystem(), str(tmp_path), str(path), start, end)
    assert table.num_rows == 3600 and table["x"][0].as_py() == 86_400


def test_the_pyarrow_requirement_excludes_the_vulnerable_14_0_0() -> None:
    """CVE-2023-47248: pyarrow 14.0.0 deserialises arbitrary code from IPC/Parquet files."""
    from packaging.requirements import Requirement

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    (pin,) = [Requirement(r) for r in project["project"]["dependencies"] if r.startswith("pyarrow")]
    assert "14.0.0" not in pin.specifier and "14.0.1" in pin.specifier


def truncated_parquet_error(tmp_path: Path) -> Exception:
    path = tmp_path / "cut.parquet"
    pq.write_table(pa.table({"x": [1.0]}), path)
    path.write_bytes(path.read_bytes()[:-20])
    try:
        pq.read_table(path)
    except Exception as exc:
        return exc
    raise AssertionError("a truncated file was read")


def test_only_content_errors_count_as_damage_not_transient_io_errors(tmp_path: Path) -> None:
    assert logstore.is_damage(truncated_parquet_error(tmp_path))
    assert logstore.is_damage(OSError("Couldn't deserialize thrift: invalid TType"))
    for code in (errno.EMFILE, errno.EIO, errno.ESTALE, errno.ETIMEDOUT):
        assert not logstore.is_damage(OSError(code, os.strerror(code), "part-1.parquet"))


def flushed_then_killed(root: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], Path]:
    """The ids of a writer that flushed one file and died before deleting its segment; the file."""
    writer = PredictionLogWriter(str(root), "m", "1", flush_seconds=3600)
    ids = writer.append(good(1.0, rows=3))
    monkeypatch.setattr(journal.Segment, "remove", journal.Segment.close)
    writer.flush()
    writer._closed = True
    writer._segment.close()
    monkeypatch.undo()
    (flushed,) = parquet_files(root)
    return ids, flushed


@pytest.mark.parametrize("recovered_by", ["an explicit recovery", "a new writer"])
def test_a_damaged_file_of_a_dead_writers_flush_is_set_aside_and_its_rows_recovered(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    recovered_by: str,
) -> None:
    root = tmp_path / "log"
    ids, flushed = flushed_then_killed(root, monkeypatch)
    flushed.write_bytes(flushed.read_bytes()[:-20])
    caplog.set_level(logging.WARNING)
    if recovered_by == "a new writer":
        PredictionLogWriter(str(root), "m", "1").close()
    else:
        recover(str(root), "m")
    logged = read_window(str(root), "predictions", "m")
    assert sorted(logged["request_id"]) == sorted(ids)  # from the journal, once each
    assert (root / "_corrupt" / flushed.relative_to(root)).exists()
    assert sum(flushed.name in r.getMessage() for r in caplog.records) == 1


def test_a_damaged_compacted_file_is_set_aside_and_its_remaining_sources_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "log"
    ids = many_small_files(root, files=4)
    kept = tmp_path / "sources"
    shutil.copytree(root / "predictions", kept)
    compact(str(root), "m")
    (compacted,) = parquet_files(root)
    compacted.write_bytes(compacted.read_bytes()[:-20])
    shutil.copytree(kept, root / "predictions", dirs_exist_ok=True)  # as if a run stopped early
    caplog.set_level(logging.WARNING)
    assert maintenance.inventory(str(root), "m").files["predictions"] == 4  # mm log status
    assert (root / "_corrupt" / compacted.relative_to(root)).exists()
    assert sum(compacted.name in r.getMessage() for r in caplog.records) == 1
    assert sorted(read_window(str(root), "predictions", "m")["request_id"]) == sorted(ids)
    assert compact(str(root), "m").files_after == 1
    assert sorted(read_window(str(root), "predictions", "m")["request_id"]) == sorted(ids)


def test_a_damaged_compacted_file_blocks_neither_reads_nor_compaction(tmp_path: Path) -> None:
    root = tmp_path / "log"
    many_small_files(root, files=3)
    compact(str(root), "m")
    (compacted,) = parquet_files(root)
    compacted.write_bytes(compacted.read_bytes()[:-20])
    assert compact(str(root), "m").files_after == 0
    assert read_window(str(root), "predictions", "m").empty
    assert maintenance.inventory(str(root), "m").corrupt_files == 1


NOT_A_REQUEST = {
    "no timestamp": pa.table({"request_id": ["bad-0"], "x": [1.0]}),
    "no request_id": pa.table({"timestamp": pa.array([0], pa.timestamp("ns", tz="UTC"))}),
    "request_id of ints": pa.table(
        {"request_id": [7], "timestamp": pa.array([0], pa.timestamp("ns", tz="UTC"))}
    ),
    "timestamp of strings": pa.table({"request_id": ["bad-0"], "timestamp": ["today"]}),
    "the two swapped": pa.table(
        {"timestamp": pa.array([0], pa.timestamp("ns", tz="UTC")), "request_id": ["bad-0"]}
    ),
}


@pytest.mark.parametrize("wrong", list(NOT_A_REQUEST))
def test_a_journal_record_without_the_logs_own_columns_is_set_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, wrong: str
) -> None:
    root = tmp_path / "log"
    folder = root / "_journal" / "model=m"
    folder.mkdir(parents=True)
    bad = bytes(journal.encode_record(NOT_A_REQUEST[wrong]))
    segment = folder / "wdeadx00000000-00000001.j2.v1.journal"
    segment.write_bytes(bytes(journal.encode_record(request(1))) + bad)
    write_segment(folder, "wdeadx00000000-00000002.j2.v1.journal", [request(2)])
    caplog.set_level(logging.WARNING)
    PredictionLogWriter(str(root), "m", "1").close()  # writers recover on start
    assert sorted(read_window(str(root), "predictions", "m")["request_id"]) == ["r1-0", "r2-0"]
    assert (folder / (segment.name + ".corrupt")).read_bytes() == bad
    assert list(folder.glob("*.journal")) == []
    assert sum(segment.name in r.getMessage() for r in caplog.records) == 1


def test_a_journal_segment_whose_recovery_fails_is_set_aside_and_the_others_recovered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "log"
    folder = root / "_journal" / "model=m"
    folder.mkdir(parents=True)
    first = request(1)
    twice = first.append_column("timestamp", first.column("timestamp"))  # which one is it?
    segment = folder / "wdeadx00000000-00000001.j2.v1.journal"
    data = write_segment(folder, segment.name, [twice])
    write_segment(folder, "wdeadx00000000-00000002.j2.v1.journal", [request(2)])
    caplog.set_level(logging.WARNING)
    recover(str(root), "m")
    assert list(read_window(str(root), "predictions", "m")["request_id"]) == ["r2-0"]
    assert (folder / (segment.name + ".corrupt")).read_bytes() == data
    assert list(folder.glob("*.journal")) == []
    lines = [r.getMessage() for r in caplog.records if segment.name in r.getMessage()]
    assert len(lines) == 1 and "cannot be recovered" in lines[0]


def test_a_record_parquet_refuses_sends_only_itself_to_the_dead_letters(tmp_path: Path) -> None:
    root = tmp_path / "log"
    writer = PredictionLogWriter(str(root), "m", "1", flush_seconds=3600)
    frames = [good(float(i)) for i in range(5)]
    frames.insert(3, good(9.0).assign(y=[{}]))  # Arrow takes an empty struct, Parquet does not
    ids = [writer.append(frame) for frame in frames]  # one schema once merged
    writer.flush()
    assert writer.status()["dead_letters"] == 1
    writer.close()
    logged = read_window(str(root), "predictions", "m")
    assert sorted(logged["request_id"]) == sorted(i for k, r in enumerate(ids) if k != 3 for i in r)
    assert [letter["request_ids"] for letter in dead_letters(root)] == [ids[3]]


def test_recovery_sends_only_the_record_parquet_refuses_to_the_dead_letters(
    tmp_path: Path,
) -> None:
    root = tmp_path / "log"
    folder = root / "_journal" / "model=m"
    folder.mkdir(parents=True)
    tables = [request(i) for i in range(5)]
    tables.insert(3, request(9).append_column("y", pa.array([{}], pa.struct([]))))
    write_segment(folder, "wdeadx00000000-00000001.j2.v1.journal", tables)
    recover(str(root), "m")
    logged = read_window(str(root), "predictions", "m")
    assert sorted(logged["request_id"]) == [f"r{i}-0" for i in range(5)]
    assert [letter["request_ids"] for letter in dead_letters(root)] == [["r9-0"]]


def test_a_window_finds_rows_an_old_writer_stored_under_the_next_day(tmp_path: Path) -> None:
    root = tmp_path / "log"
    late = pd.DataFrame({"request_id": ["late-0"], "x": [1.0],
                         "timestamp": [pd.Timestamp("2026-03-01 23:59:59", tz="UTC")]})  # fmt: skip
    folder = root / "predictions" / "model=m" / "date=2026-03-02"  # the day it was written
    folder.mkdir(parents=True)
    late.to_parquet(folder / "part-1-old.parquet", index=False)
    day = read_window(str(root), "predictions", "m", start=pd.Timestamp("2026-03-01"),
                       end=pd.Timestamp("2026-03-02"))  # fmt: skip
    assert list(day["request_id"]) == ["late-0"]
    after = read_window(str(root), "predictions", "m", start=pd.Timestamp("2026-03-02"))
    assert after.empty  # the time filter keeps it out of the next day's window


def test_a_read_of_some_columns_returns_only_them_with_nulls_where_a_file_lacks_one(
    tmp_path: Path,
) -> None:
    root = tmp_path / "log"
    now = pd.Timestamp.now(tz="UTC")
    with_label = {"request_id": ["a"], "timestamp": [now], "x": [1.0], "label": ["yes"]}
    write_partition(str(root), "predictions", "m", pd.DataFrame(with_label))
    without = {"request_id": ["b"], "timestamp": [now], "x": [2.0]}
    write_partition(str(root), "predictions", "m", pd.DataFrame(without))
    window = {"start": now - pd.Timedelta(hours=1), "end": now + pd.Timedelta(hours=1)}
    for bounds in ({}, window):  # a window reads the timestamp for its filter, yet drops it
        frame = read_window(str(root), "predictions", "m", columns=["label", "request_id"],
                             **bounds)  # fmt: skip
        assert list(frame.columns) == ["label", "request_id"]
        labels = dict(zip(frame["request_id"], frame["label"], strict=True))
        assert labels["a"] == "yes" and pd.isna(labels["b"])
    everything = read_window(str(root), "predictions", "m")
    assert sorted(everything.columns) == ["label", "request_id", "timestamp", "x"]
    empty = read_window(str(root), "labels", "m", columns=["request_id", "label"])
    assert empty.empty and list(empty.columns) == ["request_id", "label"]


def test_a_writer_that_flushes_and_dies_as_compaction_starts_is_left_for_recovery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "log"
    ids = many_small_files(root, files=3)
    list_day = maintenance.logstore.data_files
    started = []

    def a_writer_flushes_and_dies_first(fs, folder):  # an injected pause, filled by a writer
        if not started:  # compaction has started and is about to list the day
            started.append(True)
            writer = PredictionLogWriter(str(root), "m", "1", flush_seconds=3600)
            ids.extend(writer.append(good(5.0, rows=2)))
            with monkeypatch.context() as patch:
                patch.setattr(journal.Segment, "remove", journal.Segment.close)
                writer.flush()  # written, then the process dies before deleting its segment
            writer._closed = True
            writer._segment.close()
        return list_day(fs, folder)

    monkeypatch.setattr(maintenance.logstore, "data_files", a_writer_flushes_and_dies_first)
    result = compact(str(root), "m")
    monkeypatch.undo()
    assert (result.files_before, result.files_after, result.left_for_later) == (4, 2, 1)
    recover(str(root), "m")
    logged = read_window(str(root), "predictions", "m")
    assert sorted(logged["request_id"]) == sorted(ids)  # none twice


def test_a_journal_short_of_room_for_the_refused_record_stays_unhealthy_until_it_has_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with tmpfs(tmp_path / "disk", "1m") as disk:
        root = disk / "log"
        writer = PredictionLogWriter(str(root), "m", "1", flush_seconds=0.02)
        try:
            free = os.statvfs(disk)
            filler = disk / "filler"
            filler.write_bytes(b"\0" * (free.f_bavail * free.f_frsize - 60_000))
            big = good(1.0, rows=4_000)  # about 270 kB in the journal
            caplog.set_level(logging.WARNING)
            with pytest.raises(LogUnavailable, match="No space left"):
                writer.append(big)
            deadline = time.monotonic() + 1  # some 50 flush-thread rounds
            while time.monotonic() < deadline:
                assert not writer.healthy, "healthy while a record of that size cannot fit"
                time.sleep(0.01)
            filler.unlink()
            deadline = time.monotonic() + 5
            while not writer.healthy:
                assert time.monotonic() < deadline, writer.status()
                time.sleep(0.02)
            ids = writer.append(big)
        finally:
            writer.close()
        lines = [r.getMessage() for r in caplog.records]
        assert sum("refusing requests (503)" in line for line in lines) == 1
        assert sum("the journal works again" in line for line in lines) == 1
        assert sorted(read_window(str(root), "predictions", "m")["request_id"]) == sorted(ids)


def test_a_segment_closed_twice_leaves_the_next_file_on_its_number_open(tmp_path: Path) -> None:
    """A second close must not close the file that got the descriptor number meanwhile
    (found when a later test's subprocess failed with EBADF after these tests)."""
    from mm_platform.serving.predlog.journal import Segment

    segment = Segment(tmp_path, "w", 1, "1")
    number = segment.fd
    segment.close()
    other = os.open(tmp_path / "other", os.O_WRONLY | os.O_CREAT)
    try:
        assert other == number  # the lowest free number is given again
        segment.close()
        segment.remove()
        os.write(other, b"still open")
    finally:
        os.close(other)
