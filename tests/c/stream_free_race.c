/* Issue #19.1's race, for AddressSanitizer runs (docs/guarantees.md, "Sanitizers").
   The main thread pulls a 40-frame first chunk; a second thread frees the stream DELAY_MS
   milliseconds later (part-way through the pull when the delay is right), and the main thread
   then reads the chunk if the free raced the pull and succeeded. Before the fix (ed57359) the
   free returned OK and the read hit memory freed by drop<StreamSlot> (ASan:
   heap-use-after-free); now a free during the pull is S1_STATUS_INVALID_ARGUMENT.
   Build: cc -std=c11 -g -fsanitize=address -Iinclude tests/c/stream_free_race.c \
            -L<dir of an ASan-built libs1_mini.so> -ls1_mini -lpthread -Wl,-rpath,<that dir>
   Run:   DELAY_MS=1000 ./a.out tests/fixtures/tiny   (timing-dependent: sweep the delay) */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "s1_mini.h"

static s1_stream *g_stream;
static volatile int g_started;
static volatile int g_next_done;
static volatile int g_freed_during_next;

static void *freer(void *arg) {
  (void)arg;
  while (!g_started) {}
  long ms = getenv("DELAY_MS") ? atol(getenv("DELAY_MS")) : 5;
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
  int during = !g_next_done;
  s1_status st = s1_stream_free(g_stream);
  g_freed_during_next = during && st == S1_STATUS_OK;
  printf("free %s next returned: %s\n", during ? "before" : "after", s1_status_name(st));
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 2) { fprintf(stderr, "usage: %s BUNDLE_DIR\n", argv[0]); return 2; }
  s1_engine_config cfg;
  s1_engine_config_default(&cfg);
  cfg.bundle_dir = argv[1];
  s1_engine *engine = NULL;
  if (s1_engine_new(&cfg, &engine) != S1_STATUS_OK) { printf("engine: %s\n", s1_last_error()); return 2; }
  s1_synth_params p;
  s1_synth_params_default(&p);
  p.first_chunk_frames = 40;
  p.max_frames = 200;
  if (s1_stream_start(engine, "Hello there, this is a longer sentence.", &p, &g_stream) != S1_STATUS_OK) return 3;
  pthread_t t;
  pthread_create(&t, NULL, freer, NULL);
  const s1_chunk *chunk = NULL;
  g_started = 1;
  s1_status st = s1_stream_next(g_stream, &chunk);
  g_next_done = 1;
  pthread_join(t, NULL);
  printf("next: %s\n", s1_status_name(st));
  /* Only a chunk handed out by a next that the free raced is read (the library's bug); a
     chunk read after a free that came once next had returned would be the caller's bug. */
  if (st == S1_STATUS_OK && g_freed_during_next) {
    float sum = 0;
    for (size_t i = 0; i < chunk->num_samples; i++) sum += chunk->samples[i];
    printf("read %zu samples (sum %f)\n", chunk->num_samples, (double)sum);
  }
  return 0;
}
