#!/usr/bin/env bash
# A throw-away virtual environment with MONAI Label 0.8.5 from the package index, as tested with this project's
# bundles (integrations/monailabel/README.md):   bash integrations/monailabel/install.sh [VENV_DIR]
# MONAI Label pulls its own torch (a CUDA build, ~8 GB with its libraries; it runs on a CPU too) and numpy<2
# (pydicom-seg's pin), so it lives apart from the project's environment. The upper bounds below are the ones
# MONAI Label 0.8.5 needs: pydicom 3, dicomweb-client 0.60 and pynetdicom 3 changed APIs it uses.
set -euo pipefail
venv="${1:-$HOME/.cache/brainspade/monailabel-0.8.5}"
if [ ! -x "$venv/bin/monailabel" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "monailabel==0.8.5" "pydicom<3" "dicomweb-client<0.60" "pynetdicom<3"
fi
"$venv/bin/python" -c "import monailabel.app, monailabel.tasks.infer.bundle, monailabel.tasks.train.bundle"
echo "$venv"
