"""`mm server --auth` (MLflow's basic-auth app): credentials from the environment, clear
401/403 errors naming the user, and no password anywhere in the store, artifacts or logs."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.support import SEED_LINEAR, first_line, free_port, mm, write_project


@dataclass
class AuthServer:
    """A running `mm server --auth` with users alice and bob (no permissions granted)."""

    url: str
    admin_pw: str
    alice_pw: str
    bob_pw: str
    env: dict[str, str]  # the environment without MLFLOW_TRACKING_*
    work: Path  # a folder to run mm in
    banner: str


@contextmanager
def auth_server(tmp_path: Path) -> Iterator[AuthServer]:
    admin_pw, alice_pw, bob_pw = (f"pw-{secrets.token_hex(8)}" for _ in range(3))
    server_dir, work = tmp_path / "server", tmp_path / "work"
    server_dir.mkdir()
    work.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING")}
    server_log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mm_platform", "server", "--auth", "--port", str(port)],
        cwd=server_dir, env={**env, "MLFLOW_AUTH_ADMIN_PASSWORD": admin_pw},
        stdout=subprocess.PIPE, stderr=server_log, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        banner = first_line(server)
        assert "basic auth" in banner, (tmp_path / "server.log").read_text()[-3000:]
        for user, password in (("alice", alice_pw), ("bob", bob_pw)):
            created = requests.post(f"{url}/api/2.0/mlflow/users/create", timeout=10,
                                    json={"username": user, "password": password},
                                    auth=("admin", admin_pw))  # fmt: skip
            assert created.status_code == 200, created.text
        yield AuthServer(url, admin_pw, alice_pw, bob_pw, env, work, banner)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(60)
        server_log.close()


@pytest.mark.slow
def test_basic_auth_users_errors_and_no_password_at_rest(tmp_path: Path) -> None:
    wrong_pw = f"wrong-{secrets.token_hex(8)}"
    outputs: list[str] = []
    with auth_server(tmp_path) as served:
        url, env, work = served.url, served.env, served.work
        admin_pw, alice_pw, bob_pw = served.admin_pw, served.alice_pw, served.bob_pw
        assert requests.get(f"{url}/api/2.0/mlflow/experiments/search?max_results=1",
                            timeout=10).status_code == 401  # fmt: skip
        project = write_project(work, SEED_LINEAR)

        def as_user(user: str, password: str, *args: str) -> subprocess.CompletedProcess:
            credentials = {"MLFLOW_TRACKING_URI": url, "MLFLOW_TRACKING_USERNAME": user,
                           "MLFLOW_TRACKING_PASSWORD": password}  # fmt: skip
            result = mm(*args, cwd=work, env={**env, **credentials})
            outputs.extend([result.stdout, result.stderr])
            return result

        trained = as_user("alice", alice_pw, "train", str(project))
        assert trained.returncode == 0, trained.stderr

        refused = as_user("alice", wrong_pw, "train", str(project))
        assert refused.returncode == 3 and "Traceback" not in refused.stderr
        assert "refused user 'alice': wrong or missing credentials (401)" in refused.stderr

        forbidden = as_user("bob", bob_pw, "train", str(project))  # alice's experiment
        assert forbidden.returncode == 3 and "Traceback" not in forbidden.stderr
        assert (
            "user 'bob' lacks the permission to create a run in experiment 'tiny' (403)"
            in forbidden.stderr
        ), forbidden.stderr

        # registry moves too: bob may read alice's model (MLflow's default READ), not move it
        from mm_platform import tracking
        from mm_platform.errors import TrackingError

        with pytest.MonkeyPatch.context() as patch:
            for key, value in (("MLFLOW_TRACKING_URI", url), ("MLFLOW_TRACKING_USERNAME", "bob"),
                               ("MLFLOW_TRACKING_PASSWORD", bob_pw)):  # fmt: skip
                patch.setenv(key, value)
            assert tracking.resolve_version("tiny").version == "1"
            with pytest.raises(TrackingError) as refused_move:
                tracking.move_alias("tiny", "previous", "1")
            outputs.append(str(refused_move.value))
        assert str(refused_move.value).endswith(
            "user 'bob' lacks the permission to move @previous of model 'tiny' (403). Ask an "
            "admin of the server to grant it (MLflow's basic-auth permissions: READ, EDIT, MANAGE)"
        ), refused_move.value
    # the passwords are nowhere: not in the store, the artifacts, the logs or our output
    secrets_ = [p.encode() for p in (admin_pw, alice_pw, bob_pw, wrong_pw)]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "mlflow.db" for p in files) and any("mlartifacts" in str(p) for p in files)
    for path in files:
        data = path.read_bytes()
        for secret in secrets_:
            assert secret not in data, f"a password is in {path}"
    for text in outputs:
        for secret in secrets_:
            assert secret.decode() not in text


@pytest.mark.slow
def test_no_password_printed_and_train_owns_the_monitoring_experiment(tmp_path: Path) -> None:
    """A password in MLFLOW_TRACKING_URI shows as alice:***@ in every output, and the model's
    writer owns `<project>-monitoring`: a read-only user's `mm drift` gets the one-line 403,
    it cannot take the experiment over and lock the writer out."""
    outputs: list[str] = []
    with auth_server(tmp_path) as served:
        url, env, work = served.url, served.env, served.work
        alice_pw, bob_pw = served.alice_pw, served.bob_pw
        port = url.rsplit(":", 1)[1]
        outputs.append(served.banner)
        project = write_project(work, {**SEED_LINEAR, "serving": {"prediction_log": "log"}})

        def run(uri: str, *args: str, **credentials: str) -> subprocess.CompletedProcess:
            extra = {"MLFLOW_TRACKING_URI": uri, **credentials}
            result = mm(*args, cwd=work, env={**env, **extra})
            outputs.extend([result.stdout, result.stderr])
            return result

        with_password = url.replace("http://", f"http://alice:{alice_pw}@")
        trained = run(with_password, "train", str(project))
        assert trained.returncode == 0, trained.stderr
        last = trained.stdout.strip().splitlines()[-1]
        assert f"store http://alice:***@127.0.0.1:{port})" in last, last

        wrong = run(url.replace("http://", "http://alice:wrong-secret@"), "train", str(project))
        assert wrong.returncode == 3 and "Traceback" not in wrong.stderr
        outputs.append(wrong.stderr.replace("wrong-secret", alice_pw))  # checked below

        bob = {"MLFLOW_TRACKING_USERNAME": "bob", "MLFLOW_TRACKING_PASSWORD": bob_pw}
        refused = run(url, "drift", str(project), **bob)
        assert refused.returncode == 3, refused.stderr
        assert "Traceback" not in refused.stderr
        errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, refused.stderr
        assert (
            "user 'bob' lacks the permission to create a run in experiment 'tiny-monitoring'"
            in errors[0]
        )
        assert "(403)" in errors[0]

        alice = {"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": alice_pw}
        watched = run(url, "drift", str(project), **alice)
        assert "Traceback" not in watched.stderr and "403" not in watched.stderr, watched.stderr
        # nothing was served or predicted: an empty window is "not enough data", exit 6
        assert watched.returncode == 6, watched.stderr
        assert "not enough" in watched.stdout + watched.stderr

        from mlflow import MlflowClient

        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
            patch.setenv("MLFLOW_TRACKING_PASSWORD", alice_pw)
            client = MlflowClient(tracking_uri=url)
            for name in ("tiny", "tiny-monitoring"):
                experiment = client.get_experiment_by_name(name)
                assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    outputs.append((tmp_path / "server.log").read_text())
    for text in outputs:
        for secret in (served.admin_pw, alice_pw, bob_pw):
            assert secret not in text


def test_redact_uri_keeps_the_user_and_hides_the_password() -> None:
    from mm_platform.errors import TrackingError
    from mm_platform.tracking import redact_uri

    assert redact_uri("http://alice:s3cret@host:5000") == "http://alice:***@host:5000"
    assert redact_uri("postgresql://mm:s3cret@db/mlflow") == "postgresql://mm:***@db/mlflow"
    assert redact_uri("http://alice@host") == "http://alice@host"
    assert redact_uri("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"
    error = TrackingError("cannot reach postgresql://mm:s3cret@db:5432/mlflow (refused)")
    assert str(error) == "cannot reach postgresql://mm:***@db:5432/mlflow (refused)"
