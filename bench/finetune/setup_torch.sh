#!/usr/bin/env bash
# Installs the PyTorch peers of bench/finetune (torch_peers.py) into a virtual environment, on a
# fresh Debian 12 machine with Python 3.11, from PyPI only:
#   bench/finetune/setup_torch.sh [VENV]        (default $TFM_TORCH_VENV or ~/.cache/typeformer/torch-venv)
# Then run the peers with VENV/bin/python (bench/finetune/README.md).
#
# PyPI's Linux torch wheel is the CUDA build: pip also brings the NVIDIA runtime wheels it
# depends on (about 6 GB in all). They are never used here: the peers run on the CPU, and the wheel
# runs without a GPU. The pins below are the versions the figures were measured with.
set -euo pipefail
venv=${1:-${TFM_TORCH_VENV:-$HOME/.cache/typeformer/torch-venv}}
py=${PYTHON:-python3}

if ! "$py" -c 'import sys; assert sys.version_info >= (3, 10)' 2>/dev/null; then
  echo "setup_torch.sh: $py is missing or older than 3.10" >&2
  exit 1
fi
# Debian's python3 needs python3-venv (ensurepip) for `-m venv`.
if ! "$py" -c 'import ensurepip' 2>/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -q && apt-get install -y -q python3-venv
  else
    echo "setup_torch.sh: $py lacks ensurepip; install python3-venv" >&2
    exit 1
  fi
fi
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q \
  torch==2.15.0 \
  transformers==5.25.0 \
  peft==0.22.0 \
  trl==1.16.0 \
  accelerate==1.16.0 \
  datasets==5.2.0 \
  bitsandbytes==0.50.2 \
  gguf==0.19.0 \
  safetensors==0.8.0 \
  numpy==2.4.6
"$venv/bin/python" - <<'EOF'
import torch, transformers, peft, trl, accelerate, bitsandbytes
print("torch", torch.__version__, "| transformers", transformers.__version__, "| peft", peft.__version__,
      "| trl", trl.__version__, "| accelerate", accelerate.__version__, "| bitsandbytes", bitsandbytes.__version__)
EOF
echo "peers installed in $venv"
