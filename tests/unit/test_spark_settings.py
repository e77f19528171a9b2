"""The `spark:` section and its environment overrides: what a session would be started with.

Nothing here starts Spark: `settings_of` and the config models are pure (the session itself,
and what happens when it cannot start, is tests/integration/test_spark_session.py).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from mm_platform.errors import ProjectConfigError
from mm_platform.project.config import Spark, load_project
from mm_platform.spark import settings_of
from mm_platform.spark.session import DEFAULTS
from tests.support import SEED_LINEAR, write_project


@pytest.fixture(autouse=True)
def _no_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """CI or a developer's shell may set them; each test sets what it is about."""
    monkeypatch.delenv("MM_SPARK_MASTER", raising=False)
    monkeypatch.delenv("MM_SPARK_CONF", raising=False)


def _project(tmp_path: Path, spark: dict | None) -> Path:
    data = copy.deepcopy(SEED_LINEAR)
    if spark is not None:
        data["spark"] = spark
    return write_project(tmp_path, data)


def test_a_project_without_a_spark_section_runs_on_every_local_core(tmp_path: Path) -> None:
    project = load_project(_project(tmp_path, None))
    assert project.spark == Spark()
    assert (project.spark.master, project.spark.conf) == ("local[*]", {})
    assert settings_of(project.spark) == project.spark
    assert settings_of() == Spark()


def test_the_spark_ui_is_off_unless_a_project_turns_it_on() -> None:
    assert DEFAULTS["spark.ui.enabled"] == "false"


@pytest.mark.parametrize(
    "master",
    ["local", "local[1]", "local[*]", "local[4, 2]", "spark://10.0.0.1:7077",
     "spark://h1:7077,h2:7077", "yarn", "k8s://https://10.0.0.1:6443", "sc://host:15002"],
)  # fmt: skip
def test_every_kind_of_master_is_accepted(tmp_path: Path, master: str) -> None:
    assert load_project(_project(tmp_path, {"master": master})).spark.master == master


@pytest.mark.parametrize("master", ["local[0]", "local[x]", "mesos://h:5050", "", "spark://"])
def test_a_bad_master_names_the_key_the_value_and_the_accepted_forms(
    tmp_path: Path, master: str
) -> None:
    with pytest.raises(
        ProjectConfigError,
        match=rf"project\.yaml: spark\.master: '{re.escape(master)}' is not a Spark master; use "
        r"local\[N\], .*sc://HOST:PORT",
    ):
        load_project(_project(tmp_path, {"master": master}))


def test_a_conf_key_outside_spark_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(
        ProjectConfigError,
        match=r"spark\.conf: conf key 'executor\.memory' is not a Spark setting "
        r"\(they start 'spark\.'\)",
    ):
        load_project(_project(tmp_path, {"conf": {"executor.memory": "2g"}}))


def test_an_unknown_key_in_the_section_lists_the_allowed_ones(tmp_path: Path) -> None:
    with pytest.raises(
        ProjectConfigError, match=r"unknown key 'spark\.mastr'; allowed keys here: app_name, conf"
    ):
        load_project(_project(tmp_path, {"mastr": "local[2]"}))


def test_yaml_numbers_and_booleans_in_conf_become_the_text_spark_reads(tmp_path: Path) -> None:
    path = _project(tmp_path, {"conf": {"spark.executor.cores": 4, "spark.memory.fraction": 0.5,
                                        "spark.sql.adaptive.enabled": True,
                                        "spark.eventLog.enabled": False}})  # fmt: skip
    assert "spark.executor.cores: 4\n" in path.read_text()  # YAML numbers, not strings
    assert load_project(path).spark.conf == {
        "spark.executor.cores": "4",
        "spark.memory.fraction": "0.5",
        "spark.sql.adaptive.enabled": "true",
        "spark.eventLog.enabled": "false",
    }


def test_mm_spark_master_replaces_the_projects_master_and_keeps_its_conf(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MM_SPARK_MASTER", " spark://10.1.2.3:7077 ")
    configured = Spark(master="local[2]", conf={"spark.executor.memory": "2g"}, app_name="nightly")
    assert settings_of(configured) == Spark(
        master="spark://10.1.2.3:7077", conf={"spark.executor.memory": "2g"}, app_name="nightly"
    )
    assert configured.master == "local[2]"  # the project's settings are not changed


def test_a_bad_mm_spark_master_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MM_SPARK_MASTER", "localhost:7077")
    with pytest.raises(
        ProjectConfigError,
        match=r"^MM_SPARK_MASTER: 'localhost:7077' is not a Spark master; use local\[N\]",
    ):
        settings_of(Spark())


@pytest.mark.parametrize(
    "text",
    ['{"spark.executor.memory": "4g", "spark.sql.shuffle.partitions": 64}',
     "spark.executor.memory=4g;spark.sql.shuffle.partitions=64",
     " spark.executor.memory = 4g ; ; spark.sql.shuffle.partitions=64; "],
)  # fmt: skip
def test_mm_spark_conf_as_json_or_pairs_is_merged_over_the_projects_conf(
    monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    monkeypatch.setenv("MM_SPARK_CONF", text)
    configured = Spark(conf={"spark.executor.memory": "1g", "spark.executor.cores": 2})
    assert settings_of(configured).conf == {
        "spark.executor.memory": "4g",  # the environment wins
        "spark.executor.cores": "2",  # the project's other keys stay
        "spark.sql.shuffle.partitions": "64",
    }


def test_a_pair_value_may_hold_an_equals_sign(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MM_SPARK_CONF", "spark.driver.extraJavaOptions=-Dx=1 -Dy=2")
    assert settings_of().conf == {"spark.driver.extraJavaOptions": "-Dx=1 -Dy=2"}


def test_json_booleans_become_the_same_text_as_yaml_booleans(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MM_SPARK_CONF", '{"spark.sql.adaptive.enabled": true}')
    assert settings_of().conf == Spark(conf={"spark.sql.adaptive.enabled": True}).conf


@pytest.mark.parametrize(
    ("text", "message"),
    [("spark.executor.memory", r"'spark\.executor\.memory' is not spark\.KEY=VALUE; separate"),
     ("executor.memory=4g", r"'executor\.memory=4g' is not spark\.KEY=VALUE"),
     ('{"spark.executor.memory": }', r"^MM_SPARK_CONF: not a JSON object \(Expecting value"),
     ("[1, 2]", r"^MM_SPARK_CONF: '\[1, 2\]' is not spark\.KEY=VALUE")],
)  # fmt: skip
def test_a_bad_mm_spark_conf_names_the_variable_and_the_form(
    monkeypatch: pytest.MonkeyPatch, text: str, message: str
) -> None:
    monkeypatch.setenv("MM_SPARK_CONF", text)
    with pytest.raises(ProjectConfigError, match=message):
        settings_of(Spark())


def test_a_non_spark_key_in_mm_spark_conf_json_names_that_variable_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MM_SPARK_CONF", '{"executor.memory": "4g"}')
    with pytest.raises(ProjectConfigError) as caught:
        settings_of(Spark())
    message = str(caught.value)
    assert message.startswith("MM_SPARK_CONF: ") and "'executor.memory'" in message, message
    assert "\n" not in message and "pydantic" not in message, message


def test_a_connect_sessions_master_is_logged_without_its_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mm_platform.spark import master_of

    class ConnectSession:  # what type(spark) looks like under Spark Connect
        pass

    ConnectSession.__module__ = "pyspark.sql.connect.session"
    url = "sc://workspace.example:443/;token=dapi-SECRET;x-databricks-cluster-id=0123"
    monkeypatch.setenv("MM_SPARK_MASTER", url)
    assert master_of(ConnectSession(), Spark()) == "sc://workspace.example:443"
