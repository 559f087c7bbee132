"""The one exception type the command line turns into a one-line message."""


class UserInputError(ValueError):
    """Bad input from the user: a message that names the problem and the fix.

    The command line prints ``compressbo: error: <message>`` on one line and exits
    with code 2; library callers get an ordinary ``ValueError`` subclass.
    """
