"""Errors meant for people: one line naming the problem and the fix.

``train.py`` prints these without a traceback; anything else is a bug and
keeps its traceback.
"""


class UserError(ValueError):
    """Bad input or configuration that the user can fix."""
