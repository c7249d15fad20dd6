"""One exception type for bad user input, so the CLI can print one line instead of a traceback."""


class InputError(ValueError):
    """Bad user input: the message says what is wrong and what is accepted."""


def is_input_error(exc: BaseException) -> bool:
    """True for an InputError of this library or of another copy of it.

    An exported bundle carries its own copy (`scripts/brainspade_lib`), and a chained bundle (label_ldm under
    brainspade3d) brings a second one into the same process, whose InputError is another class: recognised by
    the class's name and module so that a bad input to the chained bundle is still one `error:` line.
    """
    return isinstance(exc, InputError) or any(
        c.__name__ == "InputError" and c.__module__.rsplit(".", 1)[-1] == "errors" for c in type(exc).__mro__
    )
