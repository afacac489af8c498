#!/usr/bin/env bash
# Start a hivetrain miner under pm2 and keep it up to date:
#
#   pm2 start run_miner.sh --name NAME -- [--autoupdate.* flags] [miner flags]
#
# This pm2 process NAME is the auto-updater; the miner itself runs as the pm2 process NAME-neuron.
# All the logic (flags, health checks, rollback) is in scripts/autoupdate.sh.
set -euo pipefail
exec bash "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)/scripts/autoupdate.sh" miner "$@"
