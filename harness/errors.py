"""Errors the command line reports as one line with a chosen exit code."""


class UsageError(Exception):
    """Bad input from the user (config, flags, folders): one line, exit code 2.

    Raised before anything heavy starts or anything is written, so nothing is lost.
    """


EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
