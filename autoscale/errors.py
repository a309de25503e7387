"""The one exception type for problems a user can cause and fix.

The CLI catches it at its edge and prints its message as one line with exit code 2; everything
else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input: an unknown name, a malformed file, an impossible combination of values."""


class RuleError(UserError):
    """A combination of knobs that cannot run, by a named rule. Enumerating a space skips such
    points and counts them by `rule`; given directly, the message names the flag or key to change."""

    def __init__(self, rule: str, message: str):
        super().__init__(message)
        self.rule = rule
