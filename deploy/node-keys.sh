#!/usr/bin/env bash
# From a checkout: runs the packaged fedpeft/tools/deploy/scripts/node-keys.sh (its header says how).
# With fedpeft installed (wheel, no checkout): python -m fedpeft.tools.deploy.secrets node-keys ...
exec bash "$(cd "$(dirname "$0")/.." && pwd)/fedpeft/tools/deploy/scripts/node-keys.sh" "$@"
