/* Tests of the C ABI as a C program sees it (run under valgrind memcheck by
 * scripts/test-bindings.sh): error paths need no bundle; with a bundle directory as argv[1] it
 * also creates an engine, synthesises, streams (pull, push, cancel) and frees everything. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "s1_mini.h"

static int failures = 0;
static int passes = 0;

#define CHECK(cond)                                                             \
  do {                                                                          \
    if (cond) {                                                                 \
      passes++;                                                                 \
    } else {                                                                    \
      failures++;                                                               \
      fprintf(stderr, "FAIL %s:%d: %s (last error: %s)\n", __FILE__, __LINE__, \
              #cond, s1_last_error());                                          \
    }                                                                           \
  } while (0)

#define CHECK_STATUS(expr, want)                                                          \
  do {                                                                                    \
    s1_status got_ = (expr);                                                              \
    if (got_ == (want)) {                                                                 \
      passes++;                                                                           \
    } else {                                                                              \
      failures++;                                                                         \
      fprintf(stderr, "FAIL %s:%d: %s returned %s, want %s (last error: %s)\n", __FILE__, \
              __LINE__, #expr, s1_status_name(got_), s1_status_name(want),                \
              s1_last_error());                                                           \
    }                                                                                     \
  } while (0)

static void ffi_version_matches_header_macros(void) {
  char want[32];
  snprintf(want, sizeof want, "%d.%d.%d", S1_VERSION_MAJOR, S1_VERSION_MINOR, S1_VERSION_PATCH);
  CHECK(strcmp(s1_version(), want) == 0);
}

static void ffi_status_name_covers_known_and_unknown(void) {
  CHECK(strcmp(s1_status_name(S1_STATUS_OK), "S1_STATUS_OK") == 0);
  CHECK(strcmp(s1_status_name(S1_STATUS_BUNDLE_INVALID), "S1_STATUS_BUNDLE_INVALID") == 0);
  CHECK(strcmp(s1_status_name(S1_STATUS_INVALID_HANDLE), "S1_STATUS_INVALID_HANDLE") == 0);
  CHECK(strcmp(s1_status_name(-5), "S1_STATUS_UNKNOWN") == 0);
  CHECK(strcmp(s1_status_name(123456), "S1_STATUS_UNKNOWN") == 0);
}

static void ffi_null_pointers_return_null_pointer(void) {
  s1_engine *engine = NULL;
  s1_engine_config cfg;
  CHECK_STATUS(s1_engine_config_default(NULL), S1_STATUS_NULL_POINTER);
  CHECK(strlen(s1_last_error()) > 0);
  CHECK_STATUS(s1_synth_params_default(NULL), S1_STATUS_NULL_POINTER);
  CHECK_STATUS(s1_engine_new(NULL, &engine), S1_STATUS_NULL_POINTER);
  CHECK(engine == NULL);
  CHECK_STATUS(s1_engine_config_default(&cfg), S1_STATUS_OK);
  CHECK(strlen(s1_last_error()) == 0); /* reset by the successful call */
  CHECK_STATUS(s1_engine_new(&cfg, &engine), S1_STATUS_NULL_POINTER); /* bundle_dir NULL */
  cfg.bundle_dir = "/nonexistent";
  CHECK_STATUS(s1_engine_new(&cfg, NULL), S1_STATUS_NULL_POINTER);
  s1_audio *audio = NULL;
  CHECK_STATUS(s1_synthesize(NULL, "hi", NULL, &audio), S1_STATUS_NULL_POINTER);
  CHECK(audio == NULL);
  s1_stream *stream = NULL;
  CHECK_STATUS(s1_stream_start(NULL, "hi", NULL, &stream), S1_STATUS_NULL_POINTER);
  CHECK_STATUS(s1_stream_next(NULL, NULL), S1_STATUS_NULL_POINTER);
  CHECK_STATUS(s1_stream_cancel(NULL), S1_STATUS_NULL_POINTER);
  CHECK_STATUS(s1_stream_run(NULL, NULL, NULL), S1_STATUS_NULL_POINTER);
  /* Free functions are NULL-safe. */
  CHECK_STATUS(s1_engine_free(NULL), S1_STATUS_OK);
  CHECK_STATUS(s1_stream_free(NULL), S1_STATUS_OK);
  CHECK_STATUS(s1_audio_free(NULL), S1_STATUS_OK);
  CHECK_STATUS(s1_log_set(NULL, NULL), S1_STATUS_OK);
}

static void ffi_wrong_struct_size_is_invalid_argument(void) {
  s1_engine_config cfg;
  s1_engine *engine = NULL;
  s1_engine_config_default(&cfg);
  CHECK(cfg.struct_size == sizeof cfg);
  cfg.bundle_dir = "/nonexistent";
  cfg.struct_size = 3;
  CHECK_STATUS(s1_engine_new(&cfg, &engine), S1_STATUS_INVALID_ARGUMENT);
  CHECK(strstr(s1_last_error(), "struct_size") != NULL);
  cfg.struct_size = (uint32_t)sizeof cfg + 64; /* a newer header's struct */
  CHECK_STATUS(s1_engine_new(&cfg, &engine), S1_STATUS_INVALID_ARGUMENT);
  CHECK(engine == NULL);
}

static void ffi_missing_bundle_is_bundle_not_found(void) {
  s1_engine_config cfg;
  s1_engine *engine = NULL;
  s1_engine_config_default(&cfg);
  cfg.bundle_dir = "/nonexistent/s1-bundle";
  CHECK_STATUS(s1_engine_new(&cfg, &engine), S1_STATUS_BUNDLE_NOT_FOUND);
  CHECK(strstr(s1_last_error(), "/nonexistent/s1-bundle") != NULL);
  CHECK(engine == NULL);
  cfg.backend = "no-such-backend";
  CHECK_STATUS(s1_engine_new(&cfg, &engine), S1_STATUS_INVALID_ARGUMENT);
  CHECK(strstr(s1_last_error(), "no-such-backend") != NULL);
}

static void ffi_foreign_handles_are_invalid_handle(void) {
  int local = 0;
  /* Never-issued values: looked up, never dereferenced. */
  CHECK_STATUS(s1_engine_free((s1_engine *)(uintptr_t)0x1234), S1_STATUS_INVALID_HANDLE);
  CHECK_STATUS(s1_stream_free((s1_stream *)&local), S1_STATUS_INVALID_HANDLE);
  CHECK_STATUS(s1_audio_free((s1_audio *)&local), S1_STATUS_INVALID_HANDLE);
  CHECK(strstr(s1_last_error(), "audio") != NULL);
}

static void ffi_backends_available_reports_length(void) {
  size_t len = 0;
  char tiny[2];
  char buf[256];
  s1_status st = s1_backends_available(NULL, 0, &len);
  CHECK(st == S1_STATUS_BUFFER_TOO_SMALL || (st == S1_STATUS_OK && len == 0));
  if (len > 0) {
    CHECK_STATUS(s1_backends_available(tiny, sizeof tiny, &len), S1_STATUS_BUFFER_TOO_SMALL);
    CHECK(tiny[1] == '\0');
  }
  CHECK_STATUS(s1_backends_available(buf, sizeof buf, &len), S1_STATUS_OK);
  CHECK(strlen(buf) == len);
  printf("backends available: \"%s\"\n", buf);
}

static void *error_on_other_thread(void *arg) {
  (void)arg;
  /* This thread made no call yet: its last error is empty, whatever other threads did. */
  int empty = strlen(s1_last_error()) == 0;
  s1_engine_config_default(NULL);
  int set = strlen(s1_last_error()) > 0;
  return (void *)(uintptr_t)(empty && set);
}

static void ffi_last_error_is_thread_local(void) {
  pthread_t t;
  void *ok = NULL;
  CHECK_STATUS(s1_engine_new(NULL, NULL), S1_STATUS_NULL_POINTER);
  pthread_create(&t, NULL, error_on_other_thread, NULL);
  pthread_join(t, &ok);
  CHECK(ok != NULL);
  CHECK(strlen(s1_last_error()) > 0);
}

/* ---- with a bundle ---- */

typedef struct {
  int chunks;
  size_t samples;
  int cancel_after;
} push_state;

static int32_t on_chunk(const s1_chunk *chunk, void *user_data) {
  push_state *st = (push_state *)user_data;
  st->chunks++;
  st->samples += chunk->num_samples;
  return st->cancel_after > 0 && st->chunks >= st->cancel_after;
}

static int log_lines = 0;
static void on_log(int32_t level, const char *message, void *user_data) {
  (void)level;
  (void)message;
  (void)user_data;
  log_lines++;
}

static void *cancel_from_thread(void *stream) {
  s1_stream_cancel((s1_stream *)stream);
  return NULL;
}

typedef struct {
  const s1_engine *engine;
  s1_status status;
  size_t samples;
} synth_job;

static void *synth_on_thread(void *arg) {
  synth_job *job = (synth_job *)arg;
  s1_synth_params params;
  s1_audio *audio = NULL;
  s1_synth_params_default(&params);
  params.max_frames = 12;
  job->status = s1_synthesize(job->engine, "Two threads, one engine.", &params, &audio);
  if (audio != NULL) job->samples = audio->num_samples;
  s1_audio_free(audio);
  return NULL;
}

/* Voices: PCM (stereo, 22.05 kHz) -> voice -> file -> voice -> synthesis with it; bad input. */
static void ffi_voices(s1_engine *engine) {
  enum { RATE = 22050, N = RATE }; /* 1 s */
  static float pcm[2 * N];
  s1_voice *voice = NULL, *loaded = NULL;
  s1_synth_params params;
  s1_audio *audio = NULL;
  size_t frames = 0;
  char path[256];
  const s1_voice *list[1];
  FILE *f;
  int i;

  for (i = 0; i < N; i++) {
    /* a 210 Hz triangle wave plus a little pseudo-noise (no libm needed) */
    float x = 0.3f * ((float)abs((i % 105) - 52) / 26.0f - 1.0f) + 0.01f * (float)((i * 7919) % 13 - 6);
    pcm[2 * i] = x;
    pcm[2 * i + 1] = 0.5f * x;
  }
  CHECK_STATUS(s1_voice_create(engine, pcm, N, 2, RATE, "A short reference.", &voice), S1_STATUS_OK);
  if (voice == NULL) return;
  CHECK_STATUS(s1_voice_frames(voice, &frames), S1_STATUS_OK);
  CHECK(frames == 22); /* ceil(44100 / 2048) */
  snprintf(path, sizeof path, "/tmp/s1mini-c-voice-%d.s1v", (int)getpid());
  CHECK_STATUS(s1_voice_save(voice, path), S1_STATUS_OK);
  CHECK_STATUS(s1_voice_load(path, &loaded), S1_STATUS_OK);

  s1_synth_params_default(&params);
  CHECK(params.voices == NULL && params.n_voices == 0 && params.prefix_cache == 1);
  params.max_frames = 8;
  params.seed = 3;
  list[0] = loaded;
  params.voices = list;
  params.n_voices = 1;
  CHECK_STATUS(s1_synthesize(engine, "Hello in that voice.", &params, &audio), S1_STATUS_OK);
  if (audio != NULL) {
    CHECK(audio->num_samples > 0);
    CHECK_STATUS(s1_audio_free(audio), S1_STATUS_OK);
  }
  params.voices = NULL; /* n_voices 1 with a NULL array */
  CHECK_STATUS(s1_synthesize(engine, "Hi.", &params, &audio), S1_STATUS_NULL_POINTER);

  /* Bad input: no samples, NaN, 10 minutes, a truncated file. */
  CHECK_STATUS(s1_voice_create(engine, pcm, 0, 1, RATE, "x", &voice), S1_STATUS_INVALID_ARGUMENT);
  CHECK(strstr(s1_last_error(), "no samples") != NULL);
  {
    const uint32_t nan_bits = 0x7fc00000u;
    memcpy(&pcm[5], &nan_bits, sizeof pcm[5]);
  }
  CHECK_STATUS(s1_voice_create(engine, pcm, N, 2, RATE, "x", &voice), S1_STATUS_INVALID_ARGUMENT);
  CHECK(strstr(s1_last_error(), "NaN") != NULL);
  {
    float *ten_min = calloc(600u * 8000u, sizeof(float)); /* 10 minutes at 8 kHz */
    if (ten_min != NULL) {
      CHECK_STATUS(s1_voice_create(engine, ten_min, 600u * 8000u, 1, 8000, "x", &voice),
                   S1_STATUS_INVALID_ARGUMENT);
      CHECK(strstr(s1_last_error(), "longer than the codec encodes") != NULL);
      free(ten_min);
    }
  }
  f = fopen(path, "wb");
  if (f != NULL) {
    fwrite("S1VOICE", 1, 8, f);
    fclose(f);
  }
  CHECK_STATUS(s1_voice_load(path, &loaded), S1_STATUS_VOICE_INVALID);
  remove(path);

  CHECK_STATUS(s1_voice_free(voice), S1_STATUS_OK);
  CHECK_STATUS(s1_voice_free(list[0] == NULL ? NULL : (s1_voice *)list[0]), S1_STATUS_OK);
  CHECK_STATUS(s1_voice_free((s1_voice *)list[0]), S1_STATUS_INVALID_HANDLE);
}

static void ffi_with_bundle(const char *bundle) {
  s1_engine_config cfg;
  s1_synth_params params;
  s1_engine *engine = NULL;
  s1_audio *audio = NULL;
  s1_stream *stream = NULL;
  const s1_chunk *chunk = NULL;
  size_t streamed = 0;
  int chunks = 0;

  CHECK_STATUS(s1_log_set(on_log, NULL), S1_STATUS_OK);
  s1_engine_config_default(&cfg);
  cfg.bundle_dir = bundle;
  cfg.backend = "onnx-cpu";
  CHECK_STATUS(s1_engine_new(&cfg, &engine), S1_STATUS_OK);
  if (engine == NULL) return;
  printf("log lines while loading: %d\n", log_lines);

  s1_synth_params_default(&params);
  params.max_frames = 24;
  params.seed = 7;
  CHECK_STATUS(s1_synthesize(engine, "Hello from C.", &params, &audio), S1_STATUS_OK);
  if (audio != NULL) {
    CHECK(audio->sample_rate_hz == 44100);
    CHECK(audio->num_samples > 0);
    printf("synthesize: %zu samples at %u Hz\n", audio->num_samples, audio->sample_rate_hz);
    CHECK_STATUS(s1_audio_free(audio), S1_STATUS_OK);
    CHECK_STATUS(s1_audio_free(audio), S1_STATUS_INVALID_HANDLE); /* double free */
  }
  CHECK_STATUS(s1_synthesize(engine, "", &params, &audio), S1_STATUS_EMPTY_TEXT);
  CHECK_STATUS(s1_synthesize(engine, "\xff\xfe", &params, &audio), S1_STATUS_INVALID_UTF8);
  params.temperature = -1.0f;
  CHECK_STATUS(s1_synthesize(engine, "Hi.", &params, &audio), S1_STATUS_INVALID_ARGUMENT);
  CHECK(strstr(s1_last_error(), "temperature") != NULL);
  params.temperature = 0.8f;

  /* Pull streaming. */
  params.first_chunk_frames = 2;
  params.chunk_frames = 4;
  CHECK_STATUS(s1_stream_start(engine, "Hello from C.", &params, &stream), S1_STATUS_OK);
  s1_status st;
  while ((st = s1_stream_next(stream, &chunk)) == S1_STATUS_OK) {
    CHECK(chunk->sample_rate_hz == 44100);
    CHECK(chunk->num_samples > 0);
    streamed += chunk->num_samples;
    chunks++;
  }
  CHECK_STATUS(st, S1_STATUS_END_OF_STREAM);
  CHECK(chunk == NULL);
  CHECK(chunks > 0 && streamed > 0);
  printf("pull stream: %d chunks, %zu samples\n", chunks, streamed);
  CHECK_STATUS(s1_stream_free(stream), S1_STATUS_OK);
  CHECK_STATUS(s1_stream_free(stream), S1_STATUS_INVALID_HANDLE); /* double free */
  CHECK_STATUS(s1_stream_next(stream, &chunk), S1_STATUS_INVALID_HANDLE); /* use after free */

  /* Push streaming, cancelled by the callback after the first chunk. */
  push_state ps = {0, 0, 1};
  CHECK_STATUS(s1_stream_start(engine, "Hello from C.", &params, &stream), S1_STATUS_OK);
  CHECK_STATUS(s1_stream_run(stream, NULL, NULL), S1_STATUS_NULL_POINTER);
  CHECK_STATUS(s1_stream_run(stream, on_chunk, &ps), S1_STATUS_CANCELLED);
  CHECK(ps.chunks == 1);
  CHECK_STATUS(s1_stream_free(stream), S1_STATUS_OK);

  /* Push streaming to the end. */
  push_state full = {0, 0, 0};
  CHECK_STATUS(s1_stream_start(engine, "Hello from C.", &params, &stream), S1_STATUS_OK);
  CHECK_STATUS(s1_stream_run(stream, on_chunk, &full), S1_STATUS_OK);
  CHECK(full.chunks > 0 && full.samples > 0);
  CHECK_STATUS(s1_stream_free(stream), S1_STATUS_OK);

  /* Cancel from another thread, then pull: cancelled. */
  pthread_t t;
  CHECK_STATUS(s1_stream_start(engine, "Hello from C.", &params, &stream), S1_STATUS_OK);
  pthread_create(&t, NULL, cancel_from_thread, stream);
  pthread_join(t, NULL);
  CHECK_STATUS(s1_stream_next(stream, &chunk), S1_STATUS_CANCELLED);
  CHECK_STATUS(s1_stream_free(stream), S1_STATUS_OK);

  /* One engine shared by two threads at once. */
  synth_job jobs[2] = {{engine, S1_STATUS_INTERNAL, 0}, {engine, S1_STATUS_INTERNAL, 0}};
  pthread_t threads[2];
  for (int i = 0; i < 2; i++) pthread_create(&threads[i], NULL, synth_on_thread, &jobs[i]);
  for (int i = 0; i < 2; i++) pthread_join(threads[i], NULL);
  for (int i = 0; i < 2; i++) {
    CHECK_STATUS(jobs[i].status, S1_STATUS_OK);
    CHECK(jobs[i].samples > 0);
  }

  ffi_voices(engine);

  /* A stream keeps its engine alive after s1_engine_free. */
  CHECK_STATUS(s1_stream_start(engine, "Hi.", &params, &stream), S1_STATUS_OK);
  CHECK_STATUS(s1_engine_free(engine), S1_STATUS_OK);
  CHECK_STATUS(s1_engine_free(engine), S1_STATUS_INVALID_HANDLE); /* double free */
  CHECK_STATUS(s1_synthesize(engine, "Hi.", &params, &audio), S1_STATUS_INVALID_HANDLE);
  CHECK_STATUS(s1_stream_next(stream, &chunk), S1_STATUS_OK);
  /* ...to the end of the utterance: the model is unloaded only by the last s1_stream_free. */
  while ((st = s1_stream_next(stream, &chunk)) == S1_STATUS_OK) CHECK(chunk->num_samples > 0);
  CHECK_STATUS(st, S1_STATUS_END_OF_STREAM);
  CHECK_STATUS(s1_stream_free(stream), S1_STATUS_OK);
  /* A freed stream handle passed where an engine is expected: wrong type, not a crash. */
  CHECK_STATUS(s1_synthesize((const s1_engine *)stream, "Hi.", NULL, &audio),
               S1_STATUS_INVALID_HANDLE);
  CHECK_STATUS(s1_log_set(NULL, NULL), S1_STATUS_OK);
}

int main(int argc, char **argv) {
  ffi_version_matches_header_macros();
  ffi_status_name_covers_known_and_unknown();
  ffi_null_pointers_return_null_pointer();
  ffi_wrong_struct_size_is_invalid_argument();
  ffi_missing_bundle_is_bundle_not_found();
  ffi_foreign_handles_are_invalid_handle();
  ffi_backends_available_reports_length();
  ffi_last_error_is_thread_local();
  if (argc > 1) {
    ffi_with_bundle(argv[1]);
  } else {
    printf("skipped: bundle tests (no bundle directory given)\n");
  }
  printf("c_abi: %d passed, %d failed\n", passes, failures);
  return failures == 0 ? 0 : 1;
}
