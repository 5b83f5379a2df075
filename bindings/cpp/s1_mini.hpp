// s1-mini C++ binding: header-only RAII over the C API in s1_mini.h (C++17).
//
// - Move-only owners: s1::Engine, s1::Stream, s1::Audio free their C handle exactly once.
// - Every fallible call returns s1::Result<T>: a T or an s1::Error {status, message}. The message
//   is copied from s1_last_error() at once (the next C call resets it). Result::value() throws
//   s1::Exception when exceptions are enabled and prints the error and aborts otherwise, because
//   game engines often build with -fno-exceptions: check ok() first there.
// - Streaming: range-for over an s1::Stream (pull), or Stream::run(callback) (push).
// - Threads: one Engine may be shared by threads (its methods are const); a Stream is used by one
//   thread at a time, except Stream::cancel(), which is safe from any thread.
//
// Ownership and conversion only; all behaviour lives in the library.
#ifndef S1_MINI_HPP
#define S1_MINI_HPP

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "s1_mini.h"

#if defined(__cpp_exceptions) || defined(__EXCEPTIONS) || defined(_CPPUNWIND)
#define S1_HPP_EXCEPTIONS 1
#include <exception>
#include <stdexcept>
#else
#define S1_HPP_EXCEPTIONS 0
#endif

namespace s1 {

/// A failed call: the status code and the library's message for it.
struct Error {
  s1_status status = S1_STATUS_OK;
  std::string message;

  /// The status's C name, e.g. "S1_STATUS_BUNDLE_INVALID".
  const char* name() const noexcept { return s1_status_name(status); }
  /// "S1_STATUS_X: message".
  std::string what() const { return std::string(name()) + ": " + message; }

  /// The error of the C call that just returned `status` on this thread.
  static Error last(s1_status status) { return Error{status, s1_last_error()}; }
};

#if S1_HPP_EXCEPTIONS
/// Thrown by Result::value() on error (only when exceptions are enabled).
class Exception : public std::runtime_error {
 public:
  explicit Exception(Error e) : std::runtime_error(e.what()), error_(std::move(e)) {}
  s1_status status() const noexcept { return error_.status; }
  const std::string& message() const noexcept { return error_.message; }
  const Error& error() const noexcept { return error_; }

 private:
  Error error_;
};
#endif

namespace detail {
[[noreturn]] inline void fail(const Error& e) {
#if S1_HPP_EXCEPTIONS
  throw Exception(e);
#else
  std::fprintf(stderr, "s1-mini: unchecked error: %s\n", e.what().c_str());
  std::abort();
#endif
}
}  // namespace detail

/// Either a T or an Error.
template <class T>
class Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Error error) : error_(std::move(error)) {}  // NOLINT: implicit by design

  bool ok() const noexcept { return value_.has_value(); }
  explicit operator bool() const noexcept { return ok(); }
  /// The error; only meaningful when !ok().
  const Error& error() const noexcept { return error_; }
  s1_status status() const noexcept { return ok() ? S1_STATUS_OK : error_.status; }

  /// The value; throws s1::Exception (or aborts without exceptions) when !ok().
  T& value() & {
    if (!ok()) detail::fail(error_);
    return *value_;
  }
  T&& value() && {
    if (!ok()) detail::fail(error_);
    return std::move(*value_);
  }

 private:
  std::optional<T> value_;
  Error error_;
};

/// Success or an Error.
template <>
class Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT: implicit by design

  bool ok() const noexcept { return ok_; }
  explicit operator bool() const noexcept { return ok_; }
  const Error& error() const noexcept { return error_; }
  s1_status status() const noexcept { return ok_ ? S1_STATUS_OK : error_.status; }
  /// Throws s1::Exception (or aborts without exceptions) when !ok().
  void value() const {
    if (!ok_) detail::fail(error_);
  }

 private:
  Error error_;
  bool ok_ = true;
};

/// Converts a C status into a Result<void>, copying the message at once.
inline Result<void> check(s1_status status) {
  if (status == S1_STATUS_OK) return {};
  return Error::last(status);
}

/// Library version, "MAJOR.MINOR.PATCH".
inline std::string version() { return s1_version(); }

/// Backends usable on this machine, in the order backend "auto" tries them.
inline Result<std::vector<std::string>> backends_available() {
  size_t len = 0;
  s1_status st = s1_backends_available(nullptr, 0, &len);
  if (st != S1_STATUS_OK && st != S1_STATUS_BUFFER_TOO_SMALL) return Error::last(st);
  std::string buf(len + 1, '\0');
  st = s1_backends_available(&buf[0], buf.size(), &len);
  if (st != S1_STATUS_OK) return Error::last(st);
  buf.resize(len);
  std::vector<std::string> names;
  size_t start = 0;
  while (start < buf.size()) {
    size_t comma = buf.find(',', start);
    if (comma == std::string::npos) comma = buf.size();
    names.push_back(buf.substr(start, comma - start));
    start = comma + 1;
  }
  return names;
}

class Voice;

/// Synthesis options: the C struct, filled with the library's defaults. Add reference voices with
/// add_voice(); the Voice objects must outlive the synthesize()/stream() call.
struct SynthParams : s1_synth_params {
  SynthParams() : s1_synth_params{} { s1_synth_params_default(this); }
  /// Voices to speak in, in prompt order (the Engine passes them as voices/n_voices).
  std::vector<const s1_voice*> voice_handles;
  inline SynthParams& add_voice(const Voice& voice);
  /// The C struct with voices/n_voices pointing at voice_handles (valid while *this lives).
  s1_synth_params c_params() const {
    s1_synth_params c = *this;
    c.voices = voice_handles.empty() ? nullptr : voice_handles.data();
    c.n_voices = voice_handles.size();
    return c;
  }
};

/// Engine options. Defaults come from s1_engine_config_default().
struct EngineConfig {
  std::string bundle_dir;        ///< Bundle directory (holds manifest.json). Required.
  std::string backend;           ///< "auto", "onnx-cpu", ...; empty = "auto".
  std::string ort_library_path;  ///< libonnxruntime path; empty = ORT_DYLIB_PATH, then beside the library.
  uint32_t intra_op_threads;     ///< Threads per operator; 0 = backend default.
  bool verify_hashes;            ///< Check bundle sha256s at load.

  explicit EngineConfig(std::string dir = {}) : bundle_dir(std::move(dir)) {
    s1_engine_config c{};
    s1_engine_config_default(&c);
    intra_op_threads = c.intra_op_threads;
    verify_hashes = c.verify_hashes != 0;
  }
};

/// A view of one streamed chunk: valid until the stream's next call (or, in a callback, until
/// the callback returns). Copy `samples` out to keep it.
struct Chunk {
  const float* samples = nullptr;
  size_t num_samples = 0;
  uint32_t sample_rate_hz = 0;
  uint32_t first_frame = 0;

  const float* begin() const noexcept { return samples; }
  const float* end() const noexcept { return samples + num_samples; }
  size_t size() const noexcept { return num_samples; }

  static Chunk from(const s1_chunk* c) {
    return Chunk{c->samples, c->num_samples, c->sample_rate_hz, c->first_frame};
  }
};

namespace detail {
struct EngineDeleter {
  void operator()(s1_engine* e) const noexcept { s1_engine_free(e); }
};
struct StreamDeleter {
  void operator()(s1_stream* s) const noexcept { s1_stream_free(s); }
};
struct AudioDeleter {
  void operator()(s1_audio* a) const noexcept { s1_audio_free(a); }
};
struct VoiceDeleter {
  void operator()(s1_voice* v) const noexcept { s1_voice_free(v); }
};
}  // namespace detail

/// A reference voice (codes + transcript of a recording) for voice cloning. Move-only; may be
/// shared between threads by const reference. Made by Engine::create_voice or Voice::load.
class Voice {
 public:
  explicit Voice(s1_voice* raw) noexcept : raw_(raw) {}
  /// Loads a voice file (S1_STATUS_VOICE_INVALID when truncated or corrupt).
  static Result<Voice> load(const std::string& path) {
    s1_voice* raw = nullptr;
    s1_status st = s1_voice_load(path.c_str(), &raw);
    if (st != S1_STATUS_OK) return Error::last(st);
    return Voice(raw);
  }
  /// Writes the voice file (docs/voice-format.md).
  Result<void> save(const std::string& path) const { return check(s1_voice_save(raw_.get(), path.c_str())); }
  /// Codec frames of the reference (21.53 per second).
  Result<size_t> frames() const {
    size_t n = 0;
    s1_status st = s1_voice_frames(raw_.get(), &n);
    if (st != S1_STATUS_OK) return Error::last(st);
    return n;
  }
  const s1_voice* native() const noexcept { return raw_.get(); }

 private:
  std::unique_ptr<s1_voice, detail::VoiceDeleter> raw_;
};

inline SynthParams& SynthParams::add_voice(const Voice& voice) {
  voice_handles.push_back(voice.native());
  return *this;
}

/// Owned PCM from Engine::synthesize (no copy of the library's buffer).
class Audio {
 public:
  explicit Audio(s1_audio* raw) noexcept : raw_(raw) {}
  const float* data() const noexcept { return raw_->samples; }
  size_t size() const noexcept { return raw_->num_samples; }
  uint32_t sample_rate_hz() const noexcept { return raw_->sample_rate_hz; }
  const float* begin() const noexcept { return data(); }
  const float* end() const noexcept { return data() + size(); }
  /// A copy of the samples.
  std::vector<float> to_vector() const { return std::vector<float>(begin(), end()); }
  const s1_audio* native() const noexcept { return raw_.get(); }

 private:
  std::unique_ptr<s1_audio, detail::AudioDeleter> raw_;
};

/// One synthesis in progress. Pull with range-for or next(); push with run().
class Stream {
 public:
  explicit Stream(s1_stream* raw) noexcept : raw_(raw) {}

  /// The next chunk; std::nullopt at the end of the utterance. Cancelled → Error
  /// S1_STATUS_CANCELLED.
  Result<std::optional<Chunk>> next() {
    const s1_chunk* c = nullptr;
    s1_status st = s1_stream_next(raw_.get(), &c);
    if (st == S1_STATUS_END_OF_STREAM) {
      done_ = true;
      return std::optional<Chunk>();
    }
    if (st != S1_STATUS_OK) {
      done_ = true;
      error_ = Error::last(st);
      return *error_;
    }
    return std::optional<Chunk>(Chunk::from(c));
  }

  /// Push streaming: calls `on_chunk(const s1::Chunk&) -> bool` for every chunk on this thread;
  /// returning false cancels (the result is then S1_STATUS_CANCELLED). An exception thrown by
  /// `on_chunk` cancels the stream and is rethrown here after the C call has returned.
  template <class F>
  Result<void> run(F&& on_chunk) {
    struct Ctx {
      std::remove_reference_t<F>* f = nullptr;
#if S1_HPP_EXCEPTIONS
      std::exception_ptr thrown;
#endif
    } ctx;
    ctx.f = &on_chunk;
    auto trampoline = [](const s1_chunk* c, void* user_data) -> int32_t {
      Ctx* ctx = static_cast<Ctx*>(user_data);
#if S1_HPP_EXCEPTIONS
      // Nothing may unwind through the C library: catch everything, cancel, rethrow later.
      try {
        return (*ctx->f)(Chunk::from(c)) ? 0 : 1;
      } catch (...) {
        ctx->thrown = std::current_exception();
        return 1;
      }
#else
      return (*ctx->f)(Chunk::from(c)) ? 0 : 1;
#endif
    };
    s1_status st = s1_stream_run(raw_.get(), trampoline, &ctx);
    Result<void> r = check(st);
    done_ = true;
#if S1_HPP_EXCEPTIONS
    if (ctx.thrown) std::rethrow_exception(ctx.thrown);
#endif
    return r;
  }

  /// Asks the stream to stop; safe from any thread while another thread pulls or runs it.
  void cancel() const noexcept { s1_stream_cancel(raw_.get()); }

  /// After a range-for loop: ok when the stream ended normally, else why it stopped.
  Result<void> result() const {
    if (error_) return *error_;
    return {};
  }

  s1_stream* native() const noexcept { return raw_.get(); }

  /// Input iterator over chunks; stops at the end, on cancel or on error (see result()).
  class iterator {
   public:
    using value_type = Chunk;
    using reference = const Chunk&;
    using pointer = const Chunk*;
    using difference_type = std::ptrdiff_t;
    using iterator_category = std::input_iterator_tag;

    iterator() = default;
    explicit iterator(Stream* s) : s_(s) { advance(); }
    reference operator*() const { return chunk_; }
    pointer operator->() const { return &chunk_; }
    iterator& operator++() {
      advance();
      return *this;
    }
    bool operator==(const iterator& o) const { return s_ == o.s_; }
    bool operator!=(const iterator& o) const { return s_ != o.s_; }

   private:
    void advance() {
      auto r = s_->next();
      if (r.ok() && r.value()) {
        chunk_ = *r.value();
      } else {
        s_ = nullptr;
      }
    }
    Stream* s_ = nullptr;
    Chunk chunk_;
  };

  iterator begin() { return done_ ? iterator() : iterator(this); }
  iterator end() { return iterator(); }

 private:
  std::unique_ptr<s1_stream, detail::StreamDeleter> raw_;
  std::optional<Error> error_;
  bool done_ = false;
};

/// A loaded model. Share one Engine between threads; it is move-only.
class Engine {
 public:
  /// Loads the bundle (blocks for the load).
  static Result<Engine> create(const EngineConfig& config) {
    s1_engine_config c{};
    s1_engine_config_default(&c);
    c.bundle_dir = config.bundle_dir.c_str();
    c.backend = config.backend.empty() ? nullptr : config.backend.c_str();
    c.ort_library_path = config.ort_library_path.empty() ? nullptr : config.ort_library_path.c_str();
    c.intra_op_threads = config.intra_op_threads;
    c.verify_hashes = config.verify_hashes ? 1 : 0;
    s1_engine* raw = nullptr;
    s1_status st = s1_engine_new(&c, &raw);
    if (st != S1_STATUS_OK) return Error::last(st);
    return Engine(raw);
  }

  /// A voice from reference audio: `num_frames` frames of `channels` interleaved f32 samples at
  /// `sample_rate_hz` (any rate; resampled), and what it says. Blocks while the codec encodes.
  Result<Voice> create_voice(const float* samples, size_t num_frames, uint32_t channels,
                             uint32_t sample_rate_hz, const std::string& transcript) const {
    s1_voice* raw = nullptr;
    s1_status st =
        s1_voice_create(raw_.get(), samples, num_frames, channels, sample_rate_hz, transcript.c_str(), &raw);
    if (st != S1_STATUS_OK) return Error::last(st);
    return Voice(raw);
  }
  /// Mono overload.
  Result<Voice> create_voice(const std::vector<float>& mono, uint32_t sample_rate_hz,
                             const std::string& transcript) const {
    return create_voice(mono.data(), mono.size(), 1, sample_rate_hz, transcript);
  }

  /// Synthesises the whole utterance (blocks).
  Result<Audio> synthesize(const std::string& text, const SynthParams* params = nullptr) const {
    s1_audio* raw = nullptr;
    s1_synth_params c{};
    if (params != nullptr) c = params->c_params();
    s1_status st = s1_synthesize(raw_.get(), text.c_str(), params ? &c : nullptr, &raw);
    if (st != S1_STATUS_OK) return Error::last(st);
    return Audio(raw);
  }
  Result<Audio> synthesize(const std::string& text, const SynthParams& params) const {
    return synthesize(text, &params);
  }

  /// Starts a stream; audio is computed as chunks are pulled or pushed.
  Result<Stream> stream(const std::string& text, const SynthParams* params = nullptr) const {
    s1_stream* raw = nullptr;
    s1_synth_params c{};
    if (params != nullptr) c = params->c_params();
    s1_status st = s1_stream_start(raw_.get(), text.c_str(), params ? &c : nullptr, &raw);
    if (st != S1_STATUS_OK) return Error::last(st);
    return Stream(raw);
  }
  Result<Stream> stream(const std::string& text, const SynthParams& params) const {
    return stream(text, &params);
  }

  const s1_engine* native() const noexcept { return raw_.get(); }

 private:
  explicit Engine(s1_engine* raw) noexcept : raw_(raw) {}
  std::unique_ptr<s1_engine, detail::EngineDeleter> raw_;
};

/// Log severity (s1_log_level values).
using LogCallback = std::function<void(int32_t level, const char* message)>;

/// Routes the library's log messages to `callback` (empty = off). Process-global; the callback
/// may run on any thread, concurrently, and must be thread-safe. Exceptions it throws are
/// swallowed (nothing may unwind through the library).
inline Result<void> set_log_callback(LogCallback callback) {
  // One static slot: the C side stores only a plain function pointer and user data.
  static std::mutex mu;
  static std::shared_ptr<LogCallback> slot;
  auto next = callback ? std::make_shared<LogCallback>(std::move(callback)) : nullptr;
  std::lock_guard<std::mutex> lock(mu);
  auto trampoline = [](int32_t level, const char* message, void* user_data) {
    auto* cb = static_cast<LogCallback*>(user_data);
#if S1_HPP_EXCEPTIONS
    try {
      (*cb)(level, message);
    } catch (...) {
    }
#else
    (*cb)(level, message);
#endif
  };
  Result<void> r = next ? check(s1_log_set(trampoline, next.get())) : check(s1_log_set(nullptr, nullptr));
  // Keep the previous callback alive: a message in flight on another thread may still use it.
  static std::vector<std::shared_ptr<LogCallback>> retired;
  if (slot) retired.push_back(slot);
  slot = next;
  return r;
}

}  // namespace s1

#endif  // S1_MINI_HPP
