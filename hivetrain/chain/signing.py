"""Hotkey signatures and signed HTTP requests (btauth/1) from the bittensor SDK.

The chain package is the one place that imports bittensor; the miner API, the validator's prober
and the probe protocol take these names from here.
"""

from bittensor import http_auth
from bittensor.signing import resolve_signer
from bittensor.sp_core import verify as verify_signature
from bittensor.wallets import CRYPTO_TYPE_NAMES, parse_crypto_type

__all__ = ["CRYPTO_TYPE_NAMES", "http_auth", "parse_crypto_type", "resolve_signer",
           "verify_signature"]
