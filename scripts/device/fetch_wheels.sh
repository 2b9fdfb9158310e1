#!/usr/bin/env bash
# Run HERE (a machine with PyPI), before a device call: fetch the wheels that the GPU machine's image lacks.
#
# The lent GPU machine (Python 3.12, torch 2.11, transformers 5.17, no network) has most of what the SAM 3
# benchmark and the demo trainer import, but not these, or not at the versions pinned in pyproject.toml.
# They land in .whl/ (ignored through .git/info/exclude) and travel with `carry: [".whl"]`; gpu_check.sh
# installs them into /tmp/site there. Ray is not among them: its wheel is too big to carry, so everything
# that runs there runs in-process.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir -p .whl
wheels=(
  transformers==5.23.0 tokenizers==0.23.3
  pydantic==2.14.3 pydantic-core annotated-types typing-inspection
  typing-extensions webdataset==1.0.2 braceexpand pycocotools==2.0.11
)
# pydantic-core must be the version pydantic 2.14.3 names; ask pip rather than hard-coding it.
core=$(python3 -m pip download --no-deps -q -d /tmp/pyd pydantic==2.14.3 >/dev/null && \
  unzip -p /tmp/pyd/pydantic-2.14.3-*.whl '*/METADATA' | sed -n 's/^Requires-Dist: pydantic-core==\([^ ;]*\).*/\1/p')
wheels=("${wheels[@]/pydantic-core/pydantic-core==$core}")
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -q -d .whl "${wheels[@]}"
ls -1 .whl
du -sh .whl
