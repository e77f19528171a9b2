"""The `mm` command: the group, its entry point, and the one place errors are rendered.

The commands live by area (`train`, `serve`, `lifecycle`, `monitor`) and render through
`render`. Nothing heavy is imported at module level, so `mm --help` stays fast; each
command imports what it needs when it runs.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from mm_platform import __version__
from mm_platform.cli import lifecycle, monitor, serve, train
from mm_platform.cli.logs import show_library_messages
from mm_platform.errors import MmError


class _Group(click.Group):
    """Turns the project's own errors into one line on stderr and the exit code of their
    class (the table in `mm_platform.errors`)."""

    def invoke(self, ctx: click.Context) -> Any:
        show_library_messages()
        try:
            return super().invoke(ctx)
        except MmError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mm")
def main() -> None:
    """Manage scikit-learn models on MLflow: train, compress, serve, fine-tune, promote,
    and monitor drift with Evidently.

    The tracking store is MLFLOW_TRACKING_URI, or MLflow's default sqlite:///mlflow.db in
    the working directory.
    """
    from mm_platform.tracking.store import configure

    configure()  # MLflow kept quiet before any command imports it


for _area in (train, serve, lifecycle, monitor):
    for _command in _area.COMMANDS:
        main.add_command(_command)


if __name__ == "__main__":  # pragma: no cover
    main()
