// Synthesises text to a 16-bit WAV file with the C++ binding, streaming chunk by chunk.
// Usage: synth BUNDLE_DIR OUT.wav "Text to speak."   (ORT_DYLIB_PATH names libonnxruntime)
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <vector>

#include "s1_mini.hpp"

static void put(std::ofstream& f, uint32_t v, int bytes) {
  for (int i = 0; i < bytes; i++) f.put(static_cast<char>((v >> (8 * i)) & 0xff));
}

static bool write_wav(const char* path, const std::vector<float>& pcm, uint32_t rate_hz) {
  std::ofstream f(path, std::ios::binary);
  uint32_t data_bytes = static_cast<uint32_t>(pcm.size() * 2);
  f.write("RIFF", 4);
  put(f, 36 + data_bytes, 4);
  f.write("WAVEfmt ", 8);
  put(f, 16, 4);
  put(f, 1, 2);  // PCM
  put(f, 1, 2);  // mono
  put(f, rate_hz, 4);
  put(f, rate_hz * 2, 4);
  put(f, 2, 2);
  put(f, 16, 2);
  f.write("data", 4);
  put(f, data_bytes, 4);
  for (float s : pcm) {
    auto v = static_cast<int16_t>(std::clamp(s, -1.0f, 1.0f) * 32767.0f);
    put(f, static_cast<uint16_t>(v), 2);
  }
  return static_cast<bool>(f);
}

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s BUNDLE_DIR OUT.wav TEXT\n", argv[0]);
    return 2;
  }
  try {
    s1::Engine engine = s1::Engine::create(s1::EngineConfig(argv[1])).value();
    s1::SynthParams params;
    params.max_frames = 64;
    s1::Stream stream = engine.stream(argv[3], params).value();
    std::vector<float> pcm;
    uint32_t rate_hz = 0;
    for (const s1::Chunk& chunk : stream) {  // each chunk arrives as soon as it is decoded
      pcm.insert(pcm.end(), chunk.begin(), chunk.end());
      rate_hz = chunk.sample_rate_hz;
    }
    stream.result().value();
    if (!write_wav(argv[2], pcm, rate_hz)) return 1;
    std::printf("wrote %s: %zu samples at %u Hz\n", argv[2], pcm.size(), rate_hz);
  } catch (const s1::Exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
