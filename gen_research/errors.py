"""The one exception type a user can fix by changing their command, YAML or files.

The CLI prints it as a single line (``gen_research: error: ...``) and exits with status 2, without a
traceback. Raise it with a message that says what to change, not only what went wrong.
"""


class GenResearchError(Exception):
    """An error caused by user input (config, path, name, checkpoint); shown as one line, exit status 2."""
