"""Errors every task raises alike."""


class DataError(ValueError):
    """A task's data could not be read as asked: a wrong path, a damaged file, a wrong
    layout or column, values that are no numbers. The message names the file (and where
    in it) and says what to do."""
