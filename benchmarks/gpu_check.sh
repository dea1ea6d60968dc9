#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one short run: the GPU test (features on the GPU against the
# CPU's), then the benchmark on 4,000 images.
#   bash benchmarks/gpu_check.sh            # WORKBOOK_REAL_SAMPLE=... to use the real sample
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python}
"$python" -c "import torch, torchvision; assert torch.cuda.is_available(), 'no CUDA GPU here'; \
print('torch', torch.__version__, 'torchvision', torchvision.__version__, torch.cuda.get_device_name())"
"$python" -m pytest -q -p no:cacheprovider tests/test_features.py -k gpu
"$python" benchmarks/bench_training.py --images 4000
