"""One exception type for user-facing errors: the CLI prints its message on one line, no traceback."""


class LMForgeError(Exception):
    """A problem with the user's input or environment; the message says what is wrong and what to do."""
