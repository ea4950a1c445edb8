"""The one exception type users see: the CLI prints it as `error: ...` and exits 2."""


class GentextError(Exception):
    """Bad input or usage. The message is one line that says what to do."""

    exit_code = 2
