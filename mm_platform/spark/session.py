"""Starting (or reusing) the Spark session a command runs on.

The master and configuration come from the project's `spark:` section, overridden by
`MM_SPARK_MASTER` and `MM_SPARK_CONF` (a JSON object, or `key=value` pairs separated by
`;`). A session already running in the process (a notebook's, a test's) is reused as it is.
Under `spark-submit`, the master given to spark-submit is the one used, unless
`MM_SPARK_MASTER` names another.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from mm_platform.errors import MmError, ProjectConfigError
from mm_platform.project.spark import Spark, check_master

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

ENV_MASTER = "MM_SPARK_MASTER"
ENV_CONF = "MM_SPARK_CONF"
INSTALL = 'pip install -e ".[spark]" (or pip install "mm-platform[spark]")'
# what mm sets unless the project or the environment says otherwise
DEFAULTS = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}
_CONNECT_TIMEOUT = 5.0
_LOG4J = Path(__file__).with_name("log4j2.properties")


class SparkUnavailable(MmError):
    """Spark cannot start here: no PySpark, no Java, or a master that does not answer."""


def settings_of(configured: Spark | None = None) -> Spark:
    """The project's `spark:` section with the environment's overrides applied."""
    base = configured or Spark()
    master = os.environ.get(ENV_MASTER)
    conf = dict(base.conf)
    conf.update(_env_conf(os.environ.get(ENV_CONF, "")))
    try:
        return Spark(master=check_master(master) if master else base.master, conf=conf,
                     app_name=base.app_name)  # fmt: skip
    except ValueError as exc:
        raise ProjectConfigError(f"{ENV_MASTER}: {exc}") from exc


def _env_conf(text: str) -> dict[str, str]:
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProjectConfigError(f"{ENV_CONF}: not a JSON object ({exc})") from exc
        if not isinstance(parsed, dict):
            raise ProjectConfigError(f"{ENV_CONF}: not a JSON object")
        for key in parsed:
            if not str(key).startswith("spark."):
                raise ProjectConfigError(
                    f"{ENV_CONF}: key '{key}' is not a Spark setting (they start 'spark.')"
                )
        # JSON true/false as Spark writes them, as the project file's YAML booleans become
        return {
            str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in parsed.items()
        }
    pairs = {}
    for item in filter(None, (p.strip() for p in text.split(";"))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip().startswith("spark."):
            raise ProjectConfigError(
                f"{ENV_CONF}: '{item}' is not spark.KEY=VALUE; separate pairs with ';'"
            )
        pairs[key.strip()] = value.strip()
    return pairs


def session(configured: Spark | None = None) -> SparkSession:
    """The active Spark session, or a new one on the configured master."""
    settings = settings_of(configured)
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise SparkUnavailable(
            f"the Spark engine needs PySpark, which is not installed: {INSTALL}"
        ) from exc
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    master = settings.master
    if _submitted() and not os.environ.get(ENV_MASTER):
        return _submitted_session(settings)
    _check_reachable(master)
    if master.startswith("sc://"):
        builder = SparkSession.builder.remote(master)
    else:
        _check_java()
        builder = SparkSession.builder.master(master)
        if master.startswith("local"):  # no lookup of this host's name for a local JVM
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
            # the Python workers of a local master are this Python (PySpark would start
            # `python3` from PATH, which may lack our packages, e.g. outside the venv)
            if "spark.pyspark.python" not in settings.conf:
                os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        if "spark.driver.extraJavaOptions" not in settings.conf:
            builder = builder.config(
                "spark.driver.extraJavaOptions", f"-Dlog4j.configurationFile={_LOG4J}"
            )
    builder = builder.appName(settings.app_name)
    defaults = DEFAULTS
    if master.startswith("sc://"):  # the server's UI is its own (a client cannot set it)
        defaults = {k: v for k, v in DEFAULTS.items() if not k.startswith("spark.ui.")}
    for key, value in {**defaults, **settings.conf}.items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # the JVM's or Spark Connect's reason, in one line
        raise SparkUnavailable(
            f"Spark did not start on {master}: {spark_error(exc)}; check the master "
            f"(spark.master in the project, {ENV_MASTER}) and the Spark logs above"
        ) from exc
    if not master.startswith("sc://"):
        spark.sparkContext.setLogLevel("ERROR")
    return spark


def master_of(spark: object, configured: Spark | None = None) -> str:
    """The master `spark` runs on, fit for a run's params: a classic session's own (a
    reused session may not be the project's); for Spark Connect, which has no master on the
    client, the configured sc:// address without its parameters (a token, say)."""
    configured_master = settings_of(configured).master.split(";")[0].rstrip("/")
    if type(spark).__module__.startswith("pyspark.sql.connect"):
        return configured_master
    try:
        return str(spark.sparkContext.master)  # type: ignore[attr-defined]
    except Exception:
        return configured_master


def _submitted() -> bool:
    """This Python was started by spark-submit (its JVM gateway is waiting for it)."""
    return bool(os.environ.get("PYSPARK_GATEWAY_PORT"))


def _submitted_session(settings: Spark) -> SparkSession:
    """The session on spark-submit's JVM, with its master, name and --conf; the project's
    conf is added, and mm's defaults only where spark-submit set nothing."""
    from pyspark import SparkConf, SparkContext
    from pyspark.sql import SparkSession

    SparkContext._ensure_initialized()  # connects to spark-submit's JVM
    given = SparkConf()  # its --master, --conf and properties file
    builder = SparkSession.builder
    for key, value in {**DEFAULTS, "spark.app.name": settings.app_name}.items():
        if not given.contains(key):
            builder = builder.config(key, value)
    for key, setting in settings.conf.items():
        builder = builder.config(key, str(setting))
    try:
        return builder.getOrCreate()
    except Exception as exc:
        raise SparkUnavailable(
            f"Spark did not start under spark-submit (master {given.get('spark.master', '?')}): "
            f"{spark_error(exc)}; check spark-submit's --master and the Spark logs above"
        ) from exc


def _check_java() -> None:
    """A JVM exists: JAVA_HOME's or one on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return
    if shutil.which("java"):
        return
    raise SparkUnavailable(
        "the Spark engine needs Java 17 or newer and none was found (no java on PATH"
        + (f", JAVA_HOME={home} has no bin/java" if home else ", JAVA_HOME unset")
        + "); install it (apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
    )


def _check_reachable(master: str) -> None:
    """For spark:// and sc:// masters, a TCP connection to the master's port, so a wrong
    address is one line now rather than minutes of Spark's retries."""
    if not master.startswith(("spark://", "sc://")):
        return
    last = master
    for address in master.split("://", 1)[1].split(","):  # spark://h1:7077,h2:7077 (HA)
        parsed = urlparse(f"spark://{address.split('/')[0]}")
        host = parsed.hostname or "localhost"
        port = parsed.port or (15002 if master.startswith("sc://") else 7077)
        try:
            with socket.create_connection((host, port), timeout=_CONNECT_TIMEOUT):
                return
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            last = f"{host}:{port} ({reason})"
    raise SparkUnavailable(
        f"the Spark master {master} does not answer at {last}; start it, or set another "
        f"master in the project's spark.master or {ENV_MASTER}"
    )


def spark_error(exc: BaseException) -> str:
    """A Spark or Py4J exception's first meaningful line, without the JVM stack."""
    text = str(getattr(exc, "desc", None) or getattr(exc, "message", None) or exc)
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("at ", "Traceback", "py4j.", "JVM stacktrace")):
            return line[:500]
    return type(exc).__name__
