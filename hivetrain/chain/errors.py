"""The one exception the chain package lets escape to neurons and the CLI.

Every failure a user can fix (missing wallet, unregistered hotkey, unknown subnet, unreachable
node, a dev-chain file that is not one) is raised as :class:`ChainError` with a message that says
what to run or change, so callers print ``str(error)`` instead of a traceback.
"""

from hivetrain.errors import OperatorError


class ChainError(OperatorError):
    """A chain problem the user can act on; the message names the fix."""
