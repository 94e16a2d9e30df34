"""Errors the command line reports as one line with a chosen exit code."""


class UsageError(Exception):
    """Bad input from the user (config, flags, folders): one line, exit code 2.

    Raised before anything heavy starts or anything is written, so nothing is lost.
    """


class CheckFailed(Exception):
    """A check could not be done, through no fault of the input (a child process died): one
    line, exit code 1."""


EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def one_line(e: BaseException | str, limit: int = 300) -> str:
    """A message (or an exception's) on one line, cut to `limit` characters; an exception without
    a message gives its type's name."""
    text = " ".join(str(e).split()) or (type(e).__name__ if isinstance(e, BaseException) else "")
    return text if len(text) <= limit else text[: limit - 3] + "..."
