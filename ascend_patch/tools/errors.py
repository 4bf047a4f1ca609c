"""The error every tool raises for bad input, and how an exception is shown in one line; torch-free, so
``ascend-patch --help`` imports no torch."""


class InputError(ValueError):
    """Bad user input (unknown name, missing file, bad number): the CLI prints one line and exits 2."""


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (the type alone for an empty message)."""
    first = first_line(exc)
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
