#!/bin/bash
export ORT_DYLIB_PATH=/work/main/vendor/onnxruntime/lib/libonnxruntime.so
NEW=/work/target-kv/release/s1-mini
cd /work/kvreal
b() { name=$1; shift; echo "== $name start $(date -u +%T) load $(cut -d' ' -f1 /proc/loadavg)"; "$@" --profile --json r4/$name.json > r4/$name.txt 2> r4/$name.err; echo "== $name rc $? end $(date -u +%T) load $(cut -d' ' -f1 /proc/loadavg)"; }
b new72 $NEW bench --backend onnx-cpu --bundle /work/kvreal/full --frames 24 --runs 2
b new1000 $NEW bench --backend onnx-cpu --bundle /work/kvreal/full --frames 24 --runs 2 --text-file p1000.txt
b new4000 $NEW bench --backend onnx-cpu --bundle /work/kvreal/full --frames 24 --runs 1 --warmup 0 --text-file p4000.txt
b new72b $NEW bench --backend onnx-cpu --bundle /work/kvreal/full --frames 24 --runs 2
