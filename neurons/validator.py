"""Thin wrapper kept for SN25-style habits: ``python neurons/validator.py <flags>`` = ``hivetrain validator``."""

import sys

from hivetrain.cli import run_role

if __name__ == "__main__":
    sys.exit(run_role("validator"))
