#!/usr/bin/env bash
# Fetch into .whl/ the wheels benchmarks/gpu_check.sh needs on a CUDA machine without
# network (the distributions in benchmarks/gpu_wheels.txt, each at the version this
# checkout's .venv holds, built for CPython 3.12 on x86-64 Linux, no dependencies: the
# list names each one needed), then print each wheel and their total size.
#
#   bash benchmarks/gpu_wheels.sh    # needs pip's index; .whl/ is git-ignored
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
mapfile -t PINS < <("$PY" -c '
import importlib.metadata as m
from benchmarks.target_imports import WHEELS, package_list
for name in package_list(WHEELS):
    print(f"{name}=={m.version(name)}")
')
rm -rf .whl
mkdir .whl
"$PY" -m pip download -q -d .whl --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 "${PINS[@]}"
if [ "$(find .whl -type f -name '*.whl' | wc -l)" -ne "${#PINS[@]}" ]; then
    echo "expected one wheel for each of: ${PINS[*]}" >&2
    exit 1
fi
stat -c '%s %n' .whl/*.whl | sort -rn | awk '{ total += $1; printf "%9.1f KiB  %s\n", $1 / 1024, $2 }
    END { printf "%9.2f MiB  in all, %d wheels\n", total / 1048576, NR }'
