"""Reading a project file: finding it, checking the YAML's size and shape, validating it
into a `Project`, and naming what is wrong in one line."""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any, Union

import yaml
from pydantic import BaseModel, ValidationError

from mm_platform.errors import ProjectConfigError
from mm_platform.project.base import FileDataset, SklearnDataset, SyntheticDataset
from mm_platform.project.schema import Project

# --- loading ------------------------------------------------------------------------------


def resolve_project_path(ref: str | Path) -> Path:
    """Return the project file for `ref`: a path, or a bare name looked up in ./projects."""
    path = Path(ref).expanduser()
    if path.is_file():
        return path
    if path.suffix == "" and len(path.parts) == 1:
        for candidate in (Path("projects") / f"{ref}.yaml", Path("projects") / f"{ref}.yml"):
            if candidate.is_file():
                return candidate
    raise ProjectConfigError(
        f"{ref}: no such project file; pass a path such as projects/diabetes.yaml "
        "(or a name of a file in ./projects)"
    )


# Limits on a project file, enforced while it is parsed, before anything is built from it:
# a few dozen keys is a large project, so these only stop files made to exhaust memory
# (an alias "billion laughs" expands nine aliases nine levels deep to 10^9 nodes).
MAX_PROJECT_BYTES = 1024 * 1024  # 1 MiB
MAX_ALIASES = 100  # *alias references
MAX_NODES = 100_000  # scalars and collections once every alias is expanded
MAX_DEPTH = 32  # nested mappings and lists


def load_project(ref: str | Path) -> Project:
    """Read and validate a project file; relative paths in it resolve against its folder."""
    path = resolve_project_path(ref)
    try:
        size = path.stat().st_size
        if size > MAX_PROJECT_BYTES:
            raise ProjectConfigError(
                f"{path}: the project file is {size:,} bytes, above the limit of "
                f"{MAX_PROJECT_BYTES:,} (1 MiB); a project file holds settings, not data"
            )
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProjectConfigError(f"{path}: cannot read the project file ({exc})") from exc
    try:
        _check_yaml_shape(path, text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ProjectConfigError(f"{where}: invalid YAML: {problem}") from exc
    if raw is None:
        raise ProjectConfigError(f"{path}: the project file is empty; see README, 'Project files'")
    if not isinstance(raw, dict):
        raise ProjectConfigError(
            f"{path}: a project file is a mapping of keys (name, task, dataset, ...), "
            f"got a {type(raw).__name__}"
        )
    raw.setdefault("name", path.stem)
    try:
        project = Project.model_validate(raw, context={"base_dir": path.resolve().parent})
    except ValidationError as exc:
        raise ProjectConfigError(f"{path}: {describe_validation_error(exc)}") from exc
    project._source = path
    return project


def _check_yaml_shape(path: Path, text: str) -> None:
    """Walk the YAML event stream (nothing is constructed) and refuse a file past the
    alias, expanded-size or nesting limits, in one line naming the file and the limit."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    anchors: dict[str, int] = {}  # anchor -> nodes it stands for, expanded
    open_nodes: list[list[Any]] = []  # [anchor, nodes so far] per open collection
    aliases = total = 0

    def add(count: int, new: int) -> None:
        """`count` nodes into the open collection, `new` of them not counted before."""
        nonlocal total
        total += new
        if open_nodes:
            open_nodes[-1][1] += count
        if total > MAX_NODES:
            raise ProjectConfigError(
                f"{path}: the project file expands to more than {MAX_NODES:,} values "
                "(config.MAX_NODES), through its aliases; write the values out"
            )

    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                raise ProjectConfigError(
                    f"{path}: the project file uses more than {MAX_ALIASES} aliases "
                    "(config.MAX_ALIASES); write the values out"
                )
            size = anchors.get(event.anchor or "", 1)
            add(size, size)
        elif isinstance(event, yaml.ScalarEvent):
            if event.anchor is not None:
                anchors[event.anchor] = 1
            add(1, 1)
        elif isinstance(event, yaml.CollectionStartEvent):
            open_nodes.append([event.anchor, 0])
            if len(open_nodes) > MAX_DEPTH:
                line = event.start_mark.line + 1 if event.start_mark else "?"
                raise ProjectConfigError(
                    f"{path}:{line}: the project file nests deeper than {MAX_DEPTH} levels "
                    "(config.MAX_DEPTH); a project file needs a handful"
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, count = open_nodes.pop()
            if anchor is not None:
                anchors[anchor] = count + 1
            add(count + 1, 1)  # its members were counted as they arrived


def describe_validation_error(exc: ValidationError) -> str:
    """Turn pydantic's errors into one line: the key, what is wrong, what was given."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = _clean_loc(first["loc"])
    where = _dotted(loc)
    kind = first["type"]
    given = first.get("input")
    if kind == "extra_forbidden":
        raw_loc = first["loc"]
        tag = str(raw_loc[1]) if len(raw_loc) > 2 and raw_loc[0] == "dataset" else None
        allowed = _allowed_keys(loc[:-1], tag)
        hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
        text = f"unknown key '{where}'{hint}"
    elif kind == "missing":
        text = f"required key '{where}' is missing"
    elif kind == "value_error":
        msg = str(first.get("ctx", {}).get("error", first["msg"]))
        text = f"{where}: {msg}" if where else msg
    else:
        text = f"{where}: {first['msg'][0].lower()}{first['msg'][1:]}, got {given!r}"
    if len(errors) > 1:
        text += f" (+{len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return text


_TAGS = {"synthetic", "sklearn", "file"}


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    out: list[Any] = []
    for i, part in enumerate(loc):
        # pydantic puts the discriminator tag and union member names into locations
        if i > 0 and loc[i - 1] == "dataset" and part in _TAGS:
            continue
        if isinstance(part, str) and (
            part.startswith(("list[", "bool", "int", "float", "str", "Distribution"))
            or part in ("none", "function-after[_check_range(), Distribution]")
        ):
            continue
        out.append(part)
    return tuple(out)


def _dotted(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


_DATASETS = {"synthetic": SyntheticDataset, "sklearn": SklearnDataset, "file": FileDataset}


def _allowed_keys(loc: tuple[Any, ...], dataset_tag: str | None) -> list[str]:
    """The keys a model accepts at location `loc` of a project file (for 'unknown key' errors)."""
    model: Any = Project
    for part in loc:
        if isinstance(part, int):
            continue
        if model is Project and part == "dataset":
            model = _DATASETS.get(dataset_tag or "")
        else:
            field = model.model_fields.get(part)
            model = _model_of(field.annotation) if field is not None else None
        if model is None:
            return []
    if isinstance(model, type) and issubclass(model, BaseModel):
        return sorted(model.model_fields)
    return []


def _model_of(annotation: Any) -> Any:
    """The BaseModel inside an annotation (list[X], X | None); for unions, None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (list, typing.Annotated) or (
        origin in (Union, types.UnionType) and len(args) == 1
    ):
        return _model_of(args[0])
    return None


def project_params(project: Project) -> dict[str, str]:
    """The project's settings as flat MLflow params (`dataset.source`, `features.scale`, ...)."""
    data = project.model_dump(
        mode="json",
        exclude={"candidates", "description", "compression", "serving", "finetune", "promotion"},
    )
    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix}.{key}" if prefix else key, sub)
        else:
            flat[prefix] = str(value)

    walk("", data)
    flat["candidates"] = ",".join(c.label for c in project.candidates)
    return {k: v for k, v in flat.items() if re.fullmatch(r"[\w./ -]+", k)}
