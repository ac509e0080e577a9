"""CLI commands for this capability (placeholder until its issue lands)."""


def register(app) -> None:
    """Add this module's commands to the harmspot Typer app."""
    return None
