"""Model registry moves: register a version with tags and an alias, or leave nothing behind."""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mm_platform.errors import RegistryError, TrackingError
from mm_platform.tracking.errors import auth_message, store_label, translated
from mm_platform.tracking.tags import CHALLENGER, CHAMPION, PROJECT
from mm_platform.tracking.tags import FILES_SHA256 as FILES_DIGEST_TAG

# written by MLflow's client into every models:/<name>/<version> download, not stored
_CLIENT_SIDE_FILES = ("registered_model_meta",)

log = logging.getLogger(__name__)


def get_alias_version(name: str, alias: str) -> str | None:
    """The version that `alias` points to in registered model `name`, or None."""
    client = MlflowClient()
    try:
        with translated(f"read the aliases of model '{name}'", refusals_only=True):
            return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def ensure_registered_model(client: MlflowClient, name: str, description: str) -> None:
    """Create registered model `name` unless it exists (another process may race us)."""
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        try:
            client.create_registered_model(
                name, tags={PROJECT: name}, description=description or None
            )
        except MlflowException as race:  # created meanwhile by another process
            if race.error_code != "RESOURCE_ALREADY_EXISTS":
                raise


def create_version(
    client: MlflowClient,
    name: str,
    model_uri: str,
    run_id: str,
    model_id: str | None,
    tags: Mapping[str, str],
    description: str,
) -> str:
    """Create a version of `name` in one request with all its tags, the digest of its model
    files among them (`mm.files_sha256`); return its number."""
    digest = model_files_sha256(model_uri)
    version = client.create_model_version(
        name,
        source=model_uri,
        run_id=run_id,
        tags={**tags, FILES_DIGEST_TAG: digest},
        description=description or None,
        model_id=model_id,
    )
    return str(version.version)


def files_sha256(folder: Path) -> str:
    """sha256 over a model folder's files: each one's relative path, size and bytes, by
    sorted path (MLflow's client-side `registered_model_meta` left out)."""
    digest = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in _CLIENT_SIDE_FILES)
    for path in files:
        relative = path.relative_to(folder).as_posix().encode()
        digest.update(relative + b"\0" + str(path.stat().st_size).encode() + b"\0")
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def model_files_sha256(model_uri: str) -> str:
    """The digest of a logged model's files as the artifact store holds them."""
    import tempfile

    import mlflow

    with tempfile.TemporaryDirectory(prefix="mm-digest-") as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp)
        return files_sha256(Path(local))


# (store, name, version) -> the checked local copy this process loads from: a long-running
# `mm schedule` verifies the same version every window and must not pile up copies
_verified: dict[tuple[str, str, str], tuple[str, str]] = {}


def verify_model_files(name: str, version: str) -> str:
    """Download version `version` of `name`, check its files against the digest recorded
    when it was registered, and return the local folder to load it from (kept until the
    process exits). A version registered before digests were recorded loads with a warning."""
    import atexit
    import shutil
    import tempfile

    import mlflow

    client = MlflowClient()
    folder = tempfile.mkdtemp(prefix="mm-model-")
    try:
        with translated(f"read model '{name}'", refusals_only=True):
            tags = client.get_model_version(name, str(version)).tags or {}
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version}", dst_path=folder
            )
        actual = files_sha256(Path(local))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    expected = tags.get(FILES_DIGEST_TAG)
    if expected is not None and actual != expected:
        shutil.rmtree(folder, ignore_errors=True)
        raise RegistryError(
            f"{name} version {version}: its model files changed since registration "
            f"(sha256 {actual[:12]} != {expected[:12]}); re-register it with mm train/compress "
            "or restore the files"
        )
    if expected is None:
        log.warning(
            "%s version %s has no %s tag (registered before digests were recorded): its "
            "model files are loaded unchecked; re-register it with mm train/compress",
            name, version, FILES_DIGEST_TAG,
        )  # fmt: skip
    key = (mlflow.get_tracking_uri(), name, str(version))
    kept = _verified.get(key)
    if kept is not None and kept[1] == actual and Path(kept[0]).is_dir():
        shutil.rmtree(folder, ignore_errors=True)  # the same bytes are checked out already
        return kept[0]
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    _verified[key] = (local, actual)
    return local


def register_with_alias(
    name: str,
    *,
    model_uri: str,
    run_id: str,
    model_id: str | None,
    tags: Mapping[str, str],
    description: str = "",
    alias: str | None = None,
    assign_alias: bool = True,
) -> tuple[str, str | None]:
    """Register a model version and point an alias at it; return (version, alias).

    Without `alias`, the version becomes `champion` when the model has none yet, else
    `challenger`; with `assign_alias=False` it gets none. If anything after creating the
    version fails, the version is deleted, so no half-registered model is left.
    """
    client = MlflowClient()
    with translated(f"register a version of model '{name}'", refusals_only=True):
        ensure_registered_model(client, name, description)
        number = create_version(client, name, model_uri, run_id, model_id, tags, description)
    if not assign_alias:
        return number, None
    try:
        if alias is None:
            alias = CHALLENGER if get_alias_version(name, CHAMPION) else CHAMPION
        client.set_registered_model_alias(name, alias, number)
    except BaseException as exc:
        with contextlib.suppress(MlflowException):
            client.delete_model_version(name, number)
        if isinstance(exc, MlflowException):
            why = auth_message(exc, f"set @{alias or CHAMPION} of model '{name}'") or exc.message
            raise TrackingError(
                f"registering {name} version {number} failed and was undone: {why}"
            ) from exc
        raise
    return number, alias


def resolve_version(
    name: str, *, alias: str | None = None, version: str | None = None, source: str | None = None
) -> Any:
    """The ModelVersion named by `version`, or by `alias` (default: champion).

    `source` is the project file, for the hint in the error when there is no champion.
    """
    client = MlflowClient()
    if version is not None:
        try:
            with translated(f"read model '{name}'", refusals_only=True):
                return client.get_model_version(name, str(version))
        except MlflowException as exc:
            raise RegistryError(
                f"{name} has no version {version}; see its versions on the Models page "
                "of the MLflow UI (mm ui)"
            ) from exc
    alias = alias or CHAMPION
    try:
        with translated(f"read model '{name}'", refusals_only=True):
            return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if alias == CHAMPION:
            raise RegistryError(
                f"{name} has no champion in {store_label()}; train one first: "
                f"mm train {source or f'projects/{name}.yaml'}"
            ) from exc
        raise RegistryError(f"{name} has no version with alias @{alias}") from exc


def list_versions(name: str) -> list[dict[str, Any]]:
    """Every version of `name` with its tags, description and aliases, oldest first."""
    client = MlflowClient()
    try:
        with translated(f"read model '{name}'", refusals_only=True):
            model = client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise TrackingError(
                f"no registered model named '{name}' in {store_label()}; train it first: "
                f"mm train projects/{name}.yaml"
            ) from exc
        raise
    aliases: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():  # search results carry no aliases
        aliases.setdefault(str(version), []).append(alias)
    versions = client.search_model_versions(f"name = '{name}'")
    return sorted(
        (
            {
                "version": str(v.version),
                "tags": dict(v.tags or {}),
                "description": v.description or "",
                "aliases": sorted(aliases.get(str(v.version), [])),
                "run_id": v.run_id,
            }
            for v in versions
        ),
        key=lambda v: int(v["version"]),
    )


def move_alias(name: str, alias: str, version: str) -> None:
    """Point `alias` of model `name` at `version`."""
    with translated(f"move @{alias} of model '{name}'", refusals_only=True):
        MlflowClient().set_registered_model_alias(name, alias, str(version))


def delete_version(name: str, version: str) -> None:
    """Delete version `version` of model `name` (one a failed registration left behind)."""
    with translated(f"delete version {version} of model '{name}'", refusals_only=True):
        MlflowClient().delete_model_version(name, str(version))


def delete_alias(name: str, alias: str) -> None:
    """Remove `alias` from model `name` (nothing happens when it is not set)."""
    client = MlflowClient()
    try:
        with translated(f"remove @{alias} of model '{name}'", refusals_only=True):
            client.delete_registered_model_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
