#!/usr/bin/env bash
# Helpers for the scripts that ran on the lent GPU machine (see examples/reproduce/README.md):
# install the carried aihwkit wheel and point the project at the carried CIFAR-10 archive.
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 AIHWKIT_NABN_CIFAR10=$PWD/.gpudata/cifar10_jpg.tar.gz
export TQDM_MININTERVAL=30
