"""Thin wrapper kept for SN25-style habits: ``python neurons/miner.py <flags>`` = ``hivetrain miner``."""

import sys

from hivetrain.cli import run_role

if __name__ == "__main__":
    sys.exit(run_role("miner"))
