#!/usr/bin/env bash
# Regenerate every embedded-model figure in benchmarks/results/ (CPU). Run after (re)training the
# default model: quality (issue 3), precision modes (5), step caches + scheduler (6), vidrt vs diffusers (8).
# Usage: [THREADS=N] bash benchmarks/run_default_model.sh [quick]   (THREADS: torch CPU threads, default 1 --
# steady timings on a shared machine, the setting of the published CPU figures)
set -euo pipefail
cd "$(dirname "$0")/.."
R=benchmarks/results
Q=${1:-}
T=${THREADS:-1}
export OMP_NUM_THREADS=$T
if [[ "$Q" == quick ]]; then EVAL="--quick"; REP=3; else EVAL=""; REP=5; fi
python benchmarks/eval_default_model.py $EVAL --threads $T
vidrt calibrate --model default --frames 17 --threads $T
vidrt compare --model default --precision fp32,bf16,fp16,fp8,int8,int8_dynamic --backend torch,onnxruntime \
    --json $R/compare_cpu_default.json --markdown $R/compare_cpu_default.md --plot $R/compare_cpu_default.png
python benchmarks/bench_caching.py --model default --frames 17 --threads $T \
    --json $R/caching_cpu_default.json --markdown $R/caching_cpu_default.md
vidrt bench --model default --shapes 64x64x33,96x64x17,64x64x1 --batch 1,2 --baseline diffusers --repeats $REP --threads $T \
    --json $R/cpu_default.json --markdown $R/cpu_default.md --plot $R/cpu_default.png --no-progress
