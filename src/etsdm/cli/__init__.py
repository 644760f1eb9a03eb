"""The ``etsdm`` command line: train | sample | sr-pairs | export | import | lipschitz | stability | schedules |
evaluate | features | reproduce.

Each group of commands lives in its own module and registers itself on :data:`main`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import click

from . import measure, reproduce, run


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="etsdm")
def main() -> None:
    """etsdm: Lipschitz singularities in diffusion models, and E-TSDM.

    Train baseline / E-TSDM diffusion models, sample them with any sampler, measure their
    Lipschitz constants, stability and sample quality, and write reports with plots.
    """
    click.get_current_context().with_resource(_plain_warnings())


@contextlib.contextmanager
def _plain_warnings() -> Iterator[None]:
    """Warnings (e.g. a config's) as one line "warning: <message>" on stderr, not Python's
    "file:line: UserWarning" with a source line; the previous display is restored afterwards."""
    before = warnings.showwarning
    warnings.showwarning = lambda message, *args, **kwargs: click.echo(f"warning: {message}", err=True)
    try:
        yield
    finally:
        warnings.showwarning = before


run.register(main)
measure.register(main)
reproduce.register(main)
