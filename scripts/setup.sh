#!/usr/bin/env bash
# Set up everything the package, its tests and its examples need, in ./.venv.
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Fashion-MNIST for the real-data test and LeNet5Prune-v0 (Debian ships it; needs root).
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
    else
        echo "note: Fashion-MNIST not installed (apt-get install dataset-fashion-mnist, or let" \
             "torchvision download it when online); its test will be skipped" >&2
    fi
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# torch first, pinned: an unpinned resolve would fetch a multi-GB CUDA build from the index.
.venv/bin/pip install -q --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/pip install -q --disable-pip-version-check -e '.[dev,ray,rllib]'
echo "set up: $(.venv/bin/python -c 'import torch, gymnasium, stable_baselines3, torch_pruning as tp; print("torch", torch.__version__, "gymnasium", gymnasium.__version__, "sb3", stable_baselines3.__version__, "torch-pruning", tp.__version__)')"
