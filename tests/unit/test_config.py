"""Project files: the shipped ones load, bad ones get one clear line naming the key."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from mm_platform.errors import ProjectConfigError
from mm_platform.project.config import FileDataset, load_project, project_params
from tests.support import PROJECTS, SEED_LINEAR, write_project

SHIPPED = sorted(p.stem for p in PROJECTS.glob("*.yaml"))


def test_the_five_required_projects_ship() -> None:
    assert {"seed_linear", "seed_mlp", "diabetes", "breast_cancer", "friedman"} <= set(SHIPPED)


@pytest.mark.parametrize("stem", SHIPPED)
def test_shipped_project_loads_and_is_named_after_its_file(stem: str) -> None:
    project = load_project(PROJECTS / f"{stem}.yaml")
    assert project.name == stem
    assert project.source_path == PROJECTS / f"{stem}.yaml"


def test_bare_name_resolves_in_projects_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(PROJECTS.parent)
    assert load_project("diabetes").name == "diabetes"


def test_name_defaults_to_file_stem(tmp_path: Path) -> None:
    data = copy.deepcopy(SEED_LINEAR)
    del data["name"]
    assert load_project(write_project(tmp_path, data, "my_model.yaml")).name == "my_model"


def _with(path: str, value: object) -> dict:
    data = copy.deepcopy(SEED_LINEAR)
    keys = path.split(".")
    node = data
    for key in keys[:-1]:
        node = node[int(key)] if key.isdigit() else node[key]
    node[keys[-1]] = value
    return data


BAD = [
    (_with("colour", "red"),
     r"unknown key 'colour'; allowed keys here: candidates, compression, dataset"),
    (_with("features.scal", "standard"),
     r"unknown key 'features\.scal'; allowed keys here: .*scale"),
    (_with("dataset.nosie", 1), r"unknown key 'dataset\.nosie'; allowed keys here: .*noise"),
    (_with("candidates.0.estimator", "xgboost"),
     r"candidates\[0\]\.estimator: input should be 'linear', .*got 'xgboost'"),
    (_with("split.cv_folds", "many"), r"split\.cv_folds: input should be a valid integer.*'many'"),
    (_with("split.holdout_fraction", 1.5), r"split\.holdout_fraction: input should be less than 1"),
    (_with("task", "clustering"), r"task: input should be 'regression', 'binary' or 'multiclass'"),
    (_with("selection.metric", "f1"), r"selection\.metric 'f1' does not apply to a regression"),
    (_with("candidates.0.estimator", "logistic"),
     r"candidates\[0\]\.estimator 'logistic' cannot do regression; use one of linear, ridge"),
    (_with("candidates.0.params", {"alpha": []}), r"params\.alpha is an empty list"),
    (_with("candidates.0.params", {"alpha": {"distribution": "loguniform", "low": 0, "high": 1}}),
     r"loguniform needs low > 0"),
    (_with("candidates.0.params", {"alpha": {"distribution": "uniform", "low": 0, "high": 1}}),
     r"only random search can sample"),
    (_with("dataset.source", "kaggle"),
     r"dataset: input tag 'kaggle'.*'synthetic', 'sklearn', 'file'"),
    (_with("candidates", []), r"candidates: list should have at least 1 item"),
    ({k: v for k, v in SEED_LINEAR.items() if k != "task"}, r"required key 'task' is missing"),
    (_with("compression", {"prune": {"sparsities": [0.5, 1.5]}}),
     r"compression\.prune\.sparsities\[1\]: input should be less than 1, got 1\.5"),
    (_with("compression", {"prune": {"sparsities": [0]}}),
     r"compression\.prune\.sparsities\[0\]: input should be greater than 0, got 0"),
    (_with("compression", {"prune": {"sparsities": [0.5, 0.5]}}),
     r"compression\.prune\.sparsities: lists each value once; \[0\.5\] repeat"),
    (_with("compression", {"quantize": {"bits": [8, 4]}}),
     r"compression\.quantize\.bits\[1\]: input should be 8 or 16, got 4"),
    (_with("compression", {"distill": {"students": [{"kind": "forest"}]}}),
     r"compression\.distill\.students\[0\]\.kind: input should be 'boosting', 'mlp' or"),
]  # fmt: skip


@pytest.mark.parametrize(("data", "message"), BAD)
def test_bad_project_gets_one_line_naming_file_and_key(
    tmp_path: Path, data: dict, message: str
) -> None:
    path = write_project(tmp_path, data)
    with pytest.raises(ProjectConfigError, match=message) as info:
        load_project(path)
    assert str(info.value).startswith(f"{path}: ")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\ntask: [regression\n", r"project\.yaml:3: invalid YAML"),
        ("", r"project\.yaml: the project file is empty"),
        ("- 1\n- 2\n", r"a project file is a mapping of keys .* got a list"),
    ],
)
def test_unparsable_project_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "project.yaml"
    path.write_text(text)
    with pytest.raises(ProjectConfigError, match=message):
        load_project(path)


def test_missing_project_file() -> None:
    with pytest.raises(ProjectConfigError, match=r"nope\.yaml: no such project file"):
        load_project("nope.yaml")


def test_relative_data_path_resolves_against_project_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "proj"
    folder.mkdir()
    data = _with("dataset", {"source": "file", "path": "data/train.csv", "target": "y"})
    path = write_project(folder, data)
    monkeypatch.chdir(tmp_path.parent)
    project = load_project(path.resolve())
    assert isinstance(project.dataset, FileDataset)
    assert project.dataset.path == folder.resolve() / "data" / "train.csv"


def test_project_params_are_flat_and_prefixed() -> None:
    params = project_params(load_project(PROJECTS / "diabetes.yaml"))
    assert params["dataset.source"] == "sklearn"
    assert params["dataset.name"] == "diabetes"
    assert params["features.scale"] == "standard"
    assert params["split.cv_folds"] == "5"
    assert params["candidates"] == "ridge,lasso,random_forest,gradient_boosting"


def _alias_bomb() -> str:
    """Nine aliases nine levels deep: 10^9 values once expanded (the "billion laughs")."""
    lines = ["name: bomb", "task: regression", "a: &a [x, x, x, x, x, x, x, x, x]"]
    for parent, child in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{child}: &{child} [{', '.join([f'*{parent}'] * 9)}]")
    return "\n".join([*lines, "description: *i", ""])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_alias_bomb(), r"expands to more than 100,000 values \(config.MAX_NODES\)"),
        ("name: many\n" + "v: &v 1\n" + "".join(f"k{i}: *v\n" for i in range(101)),
         r"uses more than 100 aliases \(config.MAX_ALIASES\)"),
        ("name: deep\ndescription: " + "[" * 200 + "]" * 200 + "\n",
         r":2: the project file nests deeper than 32 levels \(config.MAX_DEPTH\)"),
        ("name: big\n# " + "x" * (1024 * 1024) + "\n",
         r"is 1,048,589 bytes, above the limit of 1,048,576 \(1 MiB\)"),
    ],
    ids=["alias-bomb", "too-many-aliases", "deep", "too-big"],
)  # fmt: skip
def test_project_files_past_the_size_limits_are_refused_while_parsing(
    tmp_path: Path, text: str, message: str
) -> None:
    import time

    path = tmp_path / "project.yaml"
    path.write_text(text, encoding="utf-8")
    started = time.perf_counter()
    with pytest.raises(ProjectConfigError, match=f"^{path}.*{message}") as refused:
        load_project(path)
    assert time.perf_counter() - started < 5
    assert "\n" not in str(refused.value)


def test_anchors_and_a_few_aliases_still_load(tmp_path: Path) -> None:
    text = write_project(tmp_path, SEED_LINEAR).read_text(encoding="utf-8")
    text = text.replace("n_samples: 200", "n_samples: &rows 200") + "description: &d shared\n"
    path = tmp_path / "anchored.yaml"
    path.write_text(text + "", encoding="utf-8")
    assert load_project(path).dataset.n_samples == 200
