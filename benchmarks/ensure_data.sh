#!/bin/sh
# Make Fashion-MNIST available for the benchmark: Debian's dataset-fashion-mnist when it is
# missing and we are root (apt-get), otherwise adc downloads it with torchvision on first use
# into ~/.cache/adc/data (adc.data's fashion-mnist source does that by itself).
set -e
DIR=/usr/share/datasets/fashion-mnist
if [ -f "$DIR/train-images-idx3-ubyte.gz" ] && [ -f "$DIR/t10k-labels-idx1-ubyte.gz" ]; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing dataset-fashion-mnist with apt-get"
    if ! apt-get install -y -q dataset-fashion-mnist; then
        apt-get update -q && apt-get install -y -q dataset-fashion-mnist || \
            echo "apt-get could not install dataset-fashion-mnist; adc will download Fashion-MNIST with torchvision"
    fi
else
    echo "dataset-fashion-mnist is not installed (needs root); adc will download Fashion-MNIST with torchvision"
fi
