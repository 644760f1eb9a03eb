"""The ``etsdm`` command line: train | sample | export | import | lipschitz | stability | schedules | evaluate |
reproduce.

Each group of commands lives in its own module and registers itself on :data:`main`.
"""

from __future__ import annotations

import click

from . import measure, reproduce, run


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="etsdm")
def main() -> None:
    """etsdm: Lipschitz singularities in diffusion models, and E-TSDM.

    Train baseline / E-TSDM diffusion models, sample them with any sampler, measure their
    Lipschitz constants, stability and sample quality, and write reports with plots.
    """


run.register(main)
measure.register(main)
reproduce.register(main)
