#!/usr/bin/env bash
# Start a hivetrain validator under pm2 and keep it up to date:
#
#   pm2 start run_validator.sh --name NAME -- [--autoupdate.* flags] [validator flags]
#
# This pm2 process NAME is the auto-updater; the validator itself runs as the pm2 process NAME-neuron.
# All the logic (flags, health checks, rollback) is in scripts/autoupdate.sh.
set -euo pipefail
exec bash "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)/scripts/autoupdate.sh" validator "$@"
