#!/usr/bin/env bash
# From a checkout: runs the packaged fedpeft/deploy/scripts/node-keys.sh (its header says how).
# With fedpeft installed (wheel, no checkout): python -m fedpeft.deploy.secrets node-keys ...
exec bash "$(cd "$(dirname "$0")/.." && pwd)/fedpeft/deploy/scripts/node-keys.sh" "$@"
