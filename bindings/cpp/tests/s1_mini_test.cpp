// Tests of the C++ binding (s1_mini.hpp). Without a bundle: error paths, RAII moves, Result.
// With a bundle directory as argv[1]: synthesize, stream as a range and by callback, cancel.
#include "s1_mini.hpp"

#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>

static int passes = 0;
static int failures = 0;

#define CHECK(cond)                                                     \
  do {                                                                  \
    if (cond) {                                                         \
      passes++;                                                         \
    } else {                                                            \
      failures++;                                                       \
      std::fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                   \
  } while (0)

static_assert(!std::is_copy_constructible<s1::Engine>::value, "Engine is move-only");
static_assert(std::is_move_constructible<s1::Engine>::value, "Engine is movable");
static_assert(!std::is_copy_constructible<s1::Stream>::value, "Stream is move-only");
static_assert(!std::is_copy_constructible<s1::Audio>::value, "Audio is move-only");

static void cpp_missing_bundle_is_error_with_status_and_message() {
  auto r = s1::Engine::create(s1::EngineConfig("/nonexistent/bundle"));
  CHECK(!r.ok());
  CHECK(r.status() == S1_STATUS_BUNDLE_NOT_FOUND);
  CHECK(r.error().message.find("/nonexistent/bundle") != std::string::npos);
  CHECK(std::string(r.error().name()) == "S1_STATUS_BUNDLE_NOT_FOUND");
  bool threw = false;
  try {
    r.value();
  } catch (const s1::Exception& e) {
    threw = true;
    CHECK(e.status() == S1_STATUS_BUNDLE_NOT_FOUND);
    CHECK(std::string(e.what()).find("S1_STATUS_BUNDLE_NOT_FOUND: ") == 0);
  }
  CHECK(threw);
}

static void cpp_bad_backend_is_invalid_argument() {
  s1::EngineConfig cfg("/nonexistent/bundle");
  cfg.backend = "warp-drive";
  auto r = s1::Engine::create(cfg);
  CHECK(r.status() == S1_STATUS_INVALID_ARGUMENT);
}

static void cpp_defaults_come_from_the_library() {
  s1::SynthParams p;
  CHECK(p.struct_size == sizeof(s1_synth_params));
  CHECK(p.temperature > 0.0f && p.max_frames > 0);
  s1::EngineConfig cfg;
  CHECK(cfg.verify_hashes);
  CHECK(!s1::version().empty());
  auto backends = s1::backends_available();
  CHECK(backends.ok());
}

static void cpp_with_bundle(const char* bundle) {
  s1::EngineConfig cfg(bundle);
  cfg.backend = "onnx-cpu";
  auto created = s1::Engine::create(cfg);
  CHECK(created.ok());
  if (!created.ok()) {
    std::fprintf(stderr, "%s\n", created.error().what().c_str());
    return;
  }
  s1::Engine engine = std::move(created).value();
  s1::Engine moved = std::move(engine);  // ownership moves; one free at the end

  s1::SynthParams p;
  p.max_frames = 24;
  p.first_chunk_frames = 2;
  p.chunk_frames = 4;
  auto audio = moved.synthesize("Hello from C++.", p).value();
  CHECK(audio.sample_rate_hz() == 44100);
  CHECK(audio.size() > 0);
  std::printf("synthesize: %zu samples\n", audio.size());

  auto empty = moved.synthesize("", p);
  CHECK(empty.status() == S1_STATUS_EMPTY_TEXT);

  // Pull: range-for.
  auto stream = moved.stream("Hello from C++.", p).value();
  size_t total = 0;
  int chunks = 0;
  for (const s1::Chunk& c : stream) {
    CHECK(c.sample_rate_hz == 44100);
    total += c.size();
    chunks++;
  }
  CHECK(stream.result().ok());
  CHECK(chunks > 0 && total > 0);
  std::printf("range stream: %d chunks, %zu samples\n", chunks, total);

  // Push: callback, cancelled after the first chunk by returning false.
  auto pushed = moved.stream("Hello from C++.", p).value();
  int calls = 0;
  auto r = pushed.run([&](const s1::Chunk&) { return ++calls < 1; });
  CHECK(r.status() == S1_STATUS_CANCELLED);
  CHECK(calls == 1);

  // Push: an exception in the callback cancels the stream and is rethrown.
  auto throwing = moved.stream("Hello from C++.", p).value();
  bool rethrown = false;
  try {
    throwing.run([](const s1::Chunk&) -> bool { throw std::runtime_error("boom"); });
  } catch (const std::runtime_error& e) {
    rethrown = std::string(e.what()) == "boom";
  }
  CHECK(rethrown);

  // Cancel from another thread.
  auto cancelled = moved.stream("Hello from C++.", p).value();
  std::thread([&] { cancelled.cancel(); }).join();
  auto next = cancelled.next();
  CHECK(next.status() == S1_STATUS_CANCELLED);

  // Voices: stereo PCM at 22.05 kHz -> voice -> file -> voice -> synthesis in it.
  std::vector<float> stereo(2 * 22050);
  for (size_t i = 0; i < stereo.size() / 2; i++) {
    float x = 0.3f * static_cast<float>(static_cast<int>(i % 100) - 50) / 50.0f;
    stereo[2 * i] = x;
    stereo[2 * i + 1] = -x;
  }
  auto voice = moved.create_voice(stereo.data(), stereo.size() / 2, 2, 22050, "A reference.");
  CHECK(voice.ok());
  if (voice.ok()) {
    CHECK(voice.value().frames().value() == 22);
    const std::string path = "/tmp/s1mini-cpp-voice.s1v";
    CHECK(voice.value().save(path).ok());
    auto loaded = s1::Voice::load(path).value();
    s1::SynthParams vp;
    vp.max_frames = 6;
    vp.add_voice(loaded);
    s1::SynthParams copy = vp;  // the copy carries its own handle list
    auto a = moved.synthesize("In that voice.", copy).value();
    vp.prefix_cache = 0;
    auto b = moved.synthesize("In that voice.", vp).value();
    CHECK(a.to_vector() == b.to_vector());
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (f != nullptr) {
      std::fputs("S1VOICE", f);
      std::fclose(f);
    }
    CHECK(s1::Voice::load(path).status() == S1_STATUS_VOICE_INVALID);
    std::remove(path.c_str());
  }
  auto empty_voice = moved.create_voice(std::vector<float>{}, 44100, "x");
  CHECK(empty_voice.status() == S1_STATUS_INVALID_ARGUMENT);
  CHECK(empty_voice.error().message.find("no samples") != std::string::npos);
}

int main(int argc, char** argv) {
  cpp_missing_bundle_is_error_with_status_and_message();
  cpp_bad_backend_is_invalid_argument();
  cpp_defaults_come_from_the_library();
  if (argc > 1) {
    cpp_with_bundle(argv[1]);
  } else {
    std::printf("skipped: bundle tests (no bundle directory given)\n");
  }
  std::printf("cpp_binding: %d passed, %d failed\n", passes, failures);
  return failures == 0 ? 0 : 1;
}
