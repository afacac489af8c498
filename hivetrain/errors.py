"""The one base class of the errors an operator can act on.

Each subclass's message already says what to do (which flag to change, which command to run), so
``hivetrain`` prints it as one line with exit code 2 instead of a traceback. Kept in a module that
imports nothing, so the CLI can catch these errors without importing torch, bittensor and hivemind
first: a failed start then ends in about a second, not after ~6 CPU seconds of imports.
"""


class OperatorError(Exception):
    """An error whose message tells the operator what to change."""
