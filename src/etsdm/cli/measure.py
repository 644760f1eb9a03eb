"""Placeholder until this command group lands (owned by a helper session)."""

import click


def register(group: click.Group) -> None:
    """Add this module's commands to ``group``."""
