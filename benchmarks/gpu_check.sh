#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one short run (about 3 minutes on an H100/H200):
# the GPU-only tests (nvJPEG's pixels, measured workers, GPU features against the CPU's),
# then the benchmark on 4,000 images: (b) with the JPEGs decoded on the GPU against PIL.
#   bash benchmarks/gpu_check.sh            # WORKBOOK_REAL_SAMPLE=... to use the real sample
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python}
"$python" -c "import torch, torchvision; assert torch.cuda.is_available(), 'no CUDA GPU here'; \
print('torch', torch.__version__, 'torchvision', torchvision.__version__, torch.cuda.get_device_name())"
"$python" -m pytest -q -p no:cacheprovider tests/test_fast_input.py tests/test_features.py -k "cuda or gpu or nvjpeg"
"$python" benchmarks/bench_training.py --no-compile
