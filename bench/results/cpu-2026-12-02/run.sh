#!/usr/bin/env bash
# Final measurements on the merged main, one script, one machine, quiet.
set -u
cd /work/main
export ORT_DYLIB_PATH=/work/main/vendor/onnxruntime/lib/libonnxruntime.so.1.31.1
B=target/release/s1-mini
O=/work/final
lscpu | grep 'Model name' > $O/machine.txt; git rev-parse --short HEAD >> $O/machine.txt
for p in int4 int8 fp32; do
  rm -rf $O/cache-$p; mkdir -p $O/cache-$p
  echo "== $p short (72 tokens), 40 frames, cold then warm cache; load $(cut -d' ' -f1-3 /proc/loadavg)"
  XDG_CACHE_HOME=$O/cache-$p /usr/bin/time -f "$p short: %e s wall, %M KB max RSS" $B bench --backend onnx-cpu --bundle /work/real/$p --frames 40 --runs 2 --warmup 1 --profile --json $O/short-$p.json > $O/short-$p.txt 2>&1
  echo "== $p sweep 72,1000,4000, 24 frames; load $(cut -d' ' -f1-3 /proc/loadavg)"
  XDG_CACHE_HOME=$O/cache-$p /usr/bin/time -f "$p sweep: %e s wall" $B bench --backend onnx-cpu --bundle /work/real/$p --frames 24 --runs 1 --warmup 1 --prompt-tokens 72,1000,4000 --json $O/sweep-$p.json > $O/sweep-$p.txt 2>&1
done
echo "== torch peer (compare_torch.sh, int4 bundle, 40 frames); load $(cut -d' ' -f1-3 /proc/loadavg)"
XDG_CACHE_HOME=$O/cache-int4 S1_MINI_BIN=$B BENCH_OUT=$O/torch TORCH_MODES="eager codec" bench/compare_torch.sh --bundle /work/real/int4 --frames 40 --runs 1 --warmup 1 --no-stream > $O/torch.txt 2>&1
echo "== done $(date -u); load $(cut -d' ' -f1-3 /proc/loadavg)"
