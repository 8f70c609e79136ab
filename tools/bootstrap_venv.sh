#!/usr/bin/env bash
# Creates or refreshes .venv with the pinned dependencies (requirements.lock) and labelwise itself.
# Called by `make` whenever requirements.lock or pyproject.toml is newer than the venv's stamp.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "labelwise needs Python >= 3.11 (found $("$PYTHON" --version 2>&1)); set PYTHON=python3.11 or newer" >&2
    exit 1
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# torch is pinned to 2.13.0 in the lock file; on a CPU machine pip takes the local CPU wheel.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements.lock
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .

# CPU-only torch next to PyPI's CUDA-only torchvision: install the import shim (see its docstring).
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# Detect the failure itself: a CPU torch whose torchvision cannot register its ops.
rm -f "$site/_labelwise_cpu_torchvision_shim.py" "$site/_labelwise_cpu_torchvision_shim.pth"
mismatch=0
if ! "$VENV/bin/python" -c 'import torchvision' 2>/dev/null \
    && "$VENV/bin/python" -c 'import sys, torch; sys.exit(torch.version.cuda is not None)'; then
    mismatch=1
fi
if [ "$mismatch" = 1 ]; then
    cp tools/cpu_torchvision_shim.py "$site/_labelwise_cpu_torchvision_shim.py"
    echo "import _labelwise_cpu_torchvision_shim" > "$site/_labelwise_cpu_torchvision_shim.pth"
fi
"$VENV/bin/python" -c 'import torch, torchvision, torch_fidelity, snakemake, h5py' \
    || { echo "bootstrap: the venv at $VENV does not import its dependencies" >&2; exit 1; }
touch "$VENV/.stamp"
