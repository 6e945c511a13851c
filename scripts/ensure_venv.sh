#!/usr/bin/env bash
# Create (once) and print the path of the virtual environment with this project's dependencies, then install the
# project itself into it (editable, no dependency resolution: seconds).
#
# The environment is cached outside the clone, keyed on a hash of the dependency spec, so CI re-runs and fresh
# clones reuse it; a fresh machine builds it from scratch (PyPI). Override the cache root with FREETUMOR_VENV_ROOT.
set -euo pipefail
# pip on some machines warns about unreachable extra index folders: keep its real messages, drop that noise
quiet_pip() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
PYTHON=${PYTHON:-python3}

# The dependency spec: install_requires + extras of setup.cfg, the build requirements, and the python version.
spec=$( { sed -n '/^install_requires/,/^$/p;/^\[options.extras_require\]/,/^\[/p' setup.cfg;
          grep '^requires' pyproject.toml; "$PYTHON" -c 'import sys; print(sys.version_info[:2])'; } )
key=$(printf '%s' "$spec" | sha256sum | cut -c1-16)
root=${FREETUMOR_VENV_ROOT:-$HOME/.cache/nnunet-freetumor}
venv="$root/venv-$key"

if [ ! -f "$venv/.complete" ]; then
  echo ">> creating the environment $venv (first run on this machine: a few minutes)" >&2
  rm -rf "$venv"
  mkdir -p "$root"
  "$PYTHON" -m venv "$venv"
  quiet_pip "$venv/bin/python" -m pip install --quiet --upgrade pip "setuptools>=70" wheel >&2
  # Resolve the runtime + test dependencies from setup.cfg (pip picks a matching torch/torchvision pair).
  deps=$("$venv/bin/python" - <<'PY'
import configparser
cfg = configparser.ConfigParser()
cfg.read("setup.cfg")
reqs = [r for r in cfg["options"]["install_requires"].splitlines() if r.strip()]
reqs += [r for r in cfg["options.extras_require"]["test"].splitlines() if r.strip()]
print("\n".join(reqs))
PY
)
  mapfile -t dep_array <<<"$deps"
  quiet_pip "$venv/bin/python" -m pip install --quiet "${dep_array[@]}" >&2
  touch "$venv/.complete"
fi

# The project itself: editable, so tests and the demo run this checkout. --no-build-isolation: no network needed.
quiet_pip "$venv/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e . >&2
echo "$venv"
