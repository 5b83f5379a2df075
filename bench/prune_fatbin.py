"""Zeroes the device code of every GPU architecture but one in a shared library's CUDA fat
binaries, so that the file compresses to what one architecture needs.

    python3 bench/prune_fatbin.py IN OUT [SM]        SM defaults to 90 (H100/H200)

Used to carry onnxruntime-gpu's 284 MB CUDA provider to a GPU host within one 64 MiB transfer
(52 MB after zstd -19 with only sm_90 kept). The entry headers stay as they are, so the driver still
sees every architecture listed; only the kept one may be loaded. Never ship the output: it is
for that one device check.
"""
import struct
import sys

MAGIC = struct.pack("<I", 0xBA55ED50)


def prune(data: bytearray, keep_sm: int) -> tuple[int, int]:
    """Returns (fat binaries seen, bytes zeroed)."""
    pos, fats, zeroed = 0, 0, 0
    while True:
        i = data.find(MAGIC, pos)
        if i < 0:
            return fats, zeroed
        _version, header = struct.unpack_from("<HH", data, i + 4)
        (size,) = struct.unpack_from("<Q", data, i + 8)
        if header != 16 or i + header + size > len(data):
            pos = i + 4  # the magic number inside other data
            continue
        fats += 1
        p, end = i + header, i + header + size
        while p < end:
            _kind, _flags, entry_header = struct.unpack_from("<HHI", data, p)
            (payload,) = struct.unpack_from("<Q", data, p + 8)
            (sm,) = struct.unpack_from("<I", data, p + 28)
            if sm != keep_sm:
                data[p + entry_header : p + entry_header + payload] = bytes(payload)
                zeroed += payload
            p += entry_header + payload
        pos = end


if __name__ == "__main__":
    src, dst = sys.argv[1], sys.argv[2]
    sm = int(sys.argv[3]) if len(sys.argv) > 3 else 90
    buf = bytearray(open(src, "rb").read())
    n, z = prune(buf, sm)
    open(dst, "wb").write(buf)
    print(f"{n} fat binaries, {z / 2**20:.1f} MiB of non-sm_{sm} code zeroed -> {dst}")
