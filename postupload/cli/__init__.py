"""The `postupload` command. Each command is a thin shell over the modules it names; each module
here holds one group of commands."""

from postupload.cli import history, operations, processes, rules
from postupload.cli.main import main

__all__ = ["history", "main", "operations", "processes", "rules"]
