"""The `gentext` command (and `python -m gentext`): what the process needs set before torch loads,
then the command line."""

import sys


def prepare_process() -> None:
    """OpenMP's idle waiting, which libgomp reads once when torch loads it (gentext/threads.py)."""
    from gentext import threads

    threads.prepare()


def run() -> int:
    prepare_process()
    from gentext.cli import main  # torch loads here

    return main()


if __name__ == "__main__":
    sys.exit(run())
