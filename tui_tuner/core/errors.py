"""The one error base for problems the user can fix: bad input, missing programs, busy ports.

The CLI prints these as one clear message (no traceback) and exits with code 2.
"""


class UserError(Exception):
    """An error whose message is meant for the user and names what to change."""
