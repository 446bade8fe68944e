"""The error of a run that cannot start or go on: a bad work dir, teacher, dataset or config
combination. CLIs print it as one line and exit 2."""


class RunError(ValueError):
    """A run cannot start: bad work dir, teacher, dataset or config combination."""
