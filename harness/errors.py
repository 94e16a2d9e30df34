"""Errors the command line reports as one line with a chosen exit code."""


class UsageError(Exception):
    """Bad input from the user (config, flags, folders): one line, exit code 2.

    Raised before anything heavy starts or anything is written, so nothing is lost.
    """


EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def one_line(e: BaseException, limit: int = 300) -> str:
    """An exception's message on one line, cut to `limit` characters (its type when it has none)."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
