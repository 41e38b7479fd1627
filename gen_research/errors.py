"""The one exception type a user can fix by changing their command, YAML or files.

The CLI prints it as a single line (``gen_research: error: ...``) and exits with status 2, without a
traceback. Raise it with a message that says what to change, not only what went wrong.
"""


import argparse


class GenResearchError(Exception):
    """An error caused by user input (config, path, name, checkpoint); shown as one line, exit status 2."""


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse for the commands outside LightningCLI: a bad option becomes a GenResearchError (one line,
    exit status 2 from the CLI) instead of a usage dump."""

    def error(self, message: str):  # type: ignore[override]
        command = self.prog.split()[-1]
        raise GenResearchError(f"{command}: {message}; see {self.prog} --help")
