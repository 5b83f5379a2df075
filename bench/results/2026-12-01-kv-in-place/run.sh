#!/bin/bash
export ORT_DYLIB_PATH=/work/main/vendor/onnxruntime/lib/libonnxruntime.so
NEW=/work/target-kv/release/s1-mini
OLD=/work/kvreal/s1-mini-old
cd /work/kvreal
b() { name=$1; shift; echo "== $name start $(date -u +%T) load $(cut -d' ' -f1 /proc/loadavg)"; "$@" --profile --json r2/$name.json > r2/$name.txt 2> r2/$name.err; echo "== $name rc $? end $(date -u +%T) load $(cut -d' ' -f1 /proc/loadavg)"; }
b new72 $NEW bench --backend onnx-cpu --bundle /work/kvreal/full --frames 24 --runs 2
b old72 $OLD bench --backend onnx-cpu --bundle /work/real/bundle --frames 24 --runs 2
b new1000 $NEW bench --backend onnx-cpu --bundle /work/kvreal/full --frames 24 --runs 2 --text-file p1000.txt
b old1000 $OLD bench --backend onnx-cpu --bundle /work/real/bundle --runs 1 --warmup 0 --text-file p1000.txt
b new4000 $NEW bench --backend onnx-cpu --bundle /work/kvreal/full --frames 24 --runs 1 --warmup 0 --text-file p4000.txt
