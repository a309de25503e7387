"""The one exception type for problems a user can cause and fix.

The CLI catches it at its edge and prints its message as one line with exit code 2; everything
else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input: an unknown name, a malformed file, an impossible combination of values."""
