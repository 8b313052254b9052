#!/usr/bin/env bash
# Build the wheel, install it (non-editable, no deps) into a scratch folder placed first on
# PYTHONPATH, and check that genctl run from there finds its packaged configs, prints its help
# and trains one epoch. Uses the active environment's torch/hydra.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pip wheel -q --no-deps -w "$work/dist" . 2>&1 | grep -v "^WARNING: Location" || true
pip install -q --no-deps --target "$work/site" "$work"/dist/genctl-*.whl 2>&1 | grep -v "^WARNING: Location" || true
cd "$work"
export PYTHONPATH="$work/site"
python -c "import genctl.config as c, sys; d = c.config_dir(); print('configs from', d); sys.exit(0 if str(d).startswith('$work/site') else 1)"
python -m genctl --help > /dev/null
python -m genctl train debug=tiny hydra.run.dir="$work/run" > "$work/train.log" 2>&1 \
  || { cat "$work/train.log"; exit 1; }
test -f "$work/run/best.pt" && test -f "$work/run/metrics.json"
echo "wheel check: the installed wheel trains from its packaged configs"
