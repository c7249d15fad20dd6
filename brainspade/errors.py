"""One exception type for bad user input, so the CLI can print one line instead of a traceback."""


class InputError(ValueError):
    """Bad user input: the message says what is wrong and what is accepted."""
