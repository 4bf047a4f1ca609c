"""The error every tool raises for bad input; torch-free, so ``ascend-patch --help`` imports no torch."""


class InputError(ValueError):
    """Bad user input (unknown name, missing file, bad number): the CLI prints one line and exits 2."""
