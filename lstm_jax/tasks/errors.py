"""Errors every task raises alike, and how to tell them from failures (bugs, limits)."""

import dis
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent


class DataError(ValueError):
    """A task's data could not be read as asked: a wrong path, a damaged file, a wrong
    layout or column, values that are no numbers. The message names the file (and where
    in it) and says what to do."""


class ChildTraceback(Exception):
    """The traceback, as text, of a failure in a child process (the `__cause__` of the
    error raised again in the parent), since the error's own traceback stays behind."""


def written_for_users(error: BaseException) -> bool:
    """Whether `error` is one of the messages lstm_jax writes for its users (raised by a
    `raise` statement in the package's own code, or a file the system could not open),
    which the command prints alone. Anything else (an operation failing inside lstm_jax or
    a library it calls: a bug, or a limit such as memory) also gets its traceback, which
    is what a report of it needs."""
    if isinstance(error, OSError):
        return True
    if isinstance(error.__cause__, ChildTraceback):
        return False
    tb = error.__traceback__  # the frame it was raised in is the innermost
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    raised = code.co_code[tb.tb_lasti] == dis.opmap["RAISE_VARARGS"]
    return raised and Path(code.co_filename).resolve().is_relative_to(_PACKAGE)
