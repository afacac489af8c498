"""hivetrain: a Bittensor subnet where miners train one model together over a hivemind DHT.

This module is the one source of the package version. ``spec_version`` is the integer form
that validators put on chain as the weights version key, so it must change with every release.
"""

__version__ = "0.1.0"


def _spec_version(version: str) -> int:
    """``"1.2.3" -> 10203``: the bittensor convention for an integer version key."""
    major, minor, patch = (int(part) for part in version.split(".")[:3])
    return major * 10_000 + minor * 100 + patch


spec_version = _spec_version(__version__)
major_version = int(__version__.split(".")[0])
