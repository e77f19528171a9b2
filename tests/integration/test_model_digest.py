"""A registered version's model files carry a digest; a version whose files changed after
registration (any experiment writer can overwrite them through the artifact API) is refused
by every command that loads it, in one line."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from mm_platform.errors import RegistryError
from mm_platform.project.config import load_project
from tests.support import SEED_LINEAR, mm, write_project


@pytest.fixture
def trained(store: str, tmp_path: Path) -> Path:
    from mm_platform.training.search import train_project

    path = write_project(tmp_path, {**SEED_LINEAR, "serving": {"prediction_log": "log"}})
    assert train_project(load_project(path)).version == "1"
    pd.DataFrame({"x": [1.0, 2.0, 3.0]}).to_csv(tmp_path / "rows.csv", index=False)
    return path


def _overwrite_in_store(filename: str, tmp_path: Path) -> None:
    """Replace one of version 1's files where the artifact store keeps it, as any writer of
    the experiment can, without touching the registry."""
    from mlflow import MlflowClient
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    client = MlflowClient()
    model_id = client.get_model_version("tiny", "1").source.split("/")[-1]
    location = client.get_logged_model(model_id).artifact_location
    tampered = tmp_path / "tampered" / filename
    tampered.parent.mkdir()
    (tmp_path / "orig").mkdir()
    local = get_artifact_repository(location).download_artifacts(filename, str(tmp_path / "orig"))
    tampered.write_bytes(Path(local).read_bytes() + b"\n# changed after registration\n")
    get_artifact_repository(location).log_artifact(str(tampered))


def test_registration_records_the_digest_and_verify_returns_the_checked_folder(
    trained: Path,
) -> None:
    import mlflow.sklearn
    from mlflow import MlflowClient

    from mm_platform.tracking import verify_model_files
    from mm_platform.tracking.registry import FILES_DIGEST_TAG, model_files_sha256

    version = MlflowClient().get_model_version("tiny", "1")
    assert version.tags[FILES_DIGEST_TAG] == model_files_sha256(version.source)
    assert len(version.tags[FILES_DIGEST_TAG]) == 64
    folder = verify_model_files("tiny", "1")
    assert (Path(folder) / "MLmodel").is_file()
    assert mlflow.sklearn.load_model(folder).predict(pd.DataFrame({"x": [1.0]})).shape == (1,)
    # verified again (a schedule does it every window): the same checked copy, not another
    assert verify_model_files("tiny", "1") == folder


@pytest.mark.parametrize("filename", ["MLmodel", "model.skops"])
def test_files_changed_after_registration_are_refused_by_every_command_that_loads_them(
    trained: Path, tmp_path: Path, filename: str
) -> None:
    from mm_platform.tracking import verify_model_files

    _overwrite_in_store(filename, tmp_path)
    with pytest.raises(
        RegistryError,
        match=r"^tiny version 1: its model files changed since registration \(sha256 \w+ != "
        r"\w+\); re-register it with mm train/compress or restore the files$",
    ):
        verify_model_files("tiny", "1")
    pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [5.0, 8.0, 11.0]}).to_csv(
        tmp_path / "labelled.csv", index=False
    )
    for args in (("predict", str(trained), str(tmp_path / "rows.csv")),
                 ("serve", str(trained), "--port", "1"),
                 ("drift", str(trained), "--current", str(tmp_path / "rows.csv")),
                 ("finetune", str(trained), "--data", str(tmp_path / "labelled.csv"))):  # fmt: skip
        result = mm(*args, cwd=tmp_path, timeout=120)
        assert result.returncode == 2, result.stderr[-2000:]
        assert "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines()[-1] == (
            "error: " + str(_refusal(verify_model_files))
        )
    assert not (tmp_path / "rows.predictions.csv").exists()


def _refusal(verify) -> RegistryError:
    try:
        verify("tiny", "1")
    except RegistryError as exc:
        return exc
    raise AssertionError("not refused")


def test_a_version_registered_before_digests_loads_with_a_warning(
    trained: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from mlflow import MlflowClient

    from mm_platform.tracking import verify_model_files
    from mm_platform.tracking.registry import FILES_DIGEST_TAG

    MlflowClient().delete_model_version_tag("tiny", "1", FILES_DIGEST_TAG)
    with caplog.at_level(logging.WARNING, logger="mm_platform"):
        folder = verify_model_files("tiny", "1")
    assert (Path(folder) / "MLmodel").is_file()
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("mm_platform")]
    assert len(warnings) == 1 and "has no mm.files_sha256 tag" in warnings[0]
    assert "\n" not in warnings[0]
