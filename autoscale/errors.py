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


def did_you_mean(name: str, known) -> str:
    """" (did you mean 'gpt-1.3b'?)" for a near miss among `known`, else ""."""
    from difflib import get_close_matches

    close = get_close_matches(name, list(known), n=1, cutoff=0.8)
    return f" (did you mean {close[0]!r}?)" if close else ""
