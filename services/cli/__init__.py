"""The ``signalbox`` command: one typer application (``app``), its sub-commands in this package."""


def main() -> None:
    """The console script's entry point; the application is imported only when a command runs."""
    from services.cli.app import main as run

    run()
