"""The one exception type that reaches users as a single line instead of a traceback."""


class GenctlError(Exception):
    """A problem with the user's input (config, data, checkpoint) that they can fix.

    The CLI prints ``str(error)`` on one line and exits non-zero; anything else is a bug
    and keeps its traceback.
    """
