"""The one exception type users see: the CLI prints it as `error: ...` and exits 2."""


class GentextError(Exception):
    """Bad input or usage. The message is one line that says what to do."""

    exit_code = 2


class TrainingInterrupted(GentextError):
    """Raised after a SIGINT/SIGTERM once the training checkpoint is safely written; the exit code
    is the signal's (130, 143), so a script can tell an interruption from bad input."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def error_text(exc: BaseException) -> str:
    """What a client is told of a failure: a GentextError's message (bad input, said how to fix),
    else only the exception's type (a bug: its details stay in the server's log)."""
    return str(exc) if isinstance(exc, GentextError) else f"internal error: {type(exc).__name__}"
