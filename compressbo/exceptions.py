"""The exceptions the command line turns into a one-line message."""


class UserInputError(ValueError):
    """Bad input from the user: a message that names the problem and the fix.

    The command line prints ``compressbo: error: <message>`` on one line and exits
    with code 2; library callers get an ordinary ``ValueError`` subclass.
    """


class ReportedInterrupt(KeyboardInterrupt):
    """Ctrl-C, after the command has said on stderr what was saved and how to continue."""
