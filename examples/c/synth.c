/* Synthesises text to a 16-bit WAV file with the s1-mini C API.
 * Usage: synth BUNDLE_DIR OUT.wav "Text to speak."   (ORT_DYLIB_PATH names libonnxruntime) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "s1_mini.h"

static void put_u32(FILE *f, uint32_t v) {
  unsigned char b[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                        (unsigned char)(v >> 24)};
  fwrite(b, 1, 4, f);
}

static void put_u16(FILE *f, uint16_t v) {
  unsigned char b[2] = {(unsigned char)v, (unsigned char)(v >> 8)};
  fwrite(b, 1, 2, f);
}

/* Mono 16-bit PCM WAV; samples are clamped to [-1, 1]. */
static int write_wav(const char *path, const float *samples, size_t n, uint32_t rate_hz) {
  FILE *f = fopen(path, "wb");
  if (f == NULL) return 0;
  uint32_t data_bytes = (uint32_t)(n * 2);
  fwrite("RIFF", 1, 4, f);
  put_u32(f, 36 + data_bytes);
  fwrite("WAVEfmt ", 1, 8, f);
  put_u32(f, 16);
  put_u16(f, 1); /* PCM */
  put_u16(f, 1); /* mono */
  put_u32(f, rate_hz);
  put_u32(f, rate_hz * 2);
  put_u16(f, 2);
  put_u16(f, 16);
  fwrite("data", 1, 4, f);
  put_u32(f, data_bytes);
  for (size_t i = 0; i < n; i++) {
    float s = samples[i] < -1.0f ? -1.0f : samples[i] > 1.0f ? 1.0f : samples[i];
    put_u16(f, (uint16_t)(int16_t)(s * 32767.0f));
  }
  return fclose(f) == 0;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s BUNDLE_DIR OUT.wav TEXT\n", argv[0]);
    return 2;
  }
  printf("s1-mini %s\n", s1_version());

  s1_engine_config cfg;
  s1_engine_config_default(&cfg);
  cfg.bundle_dir = argv[1];
  s1_engine *engine = NULL;
  s1_status st = s1_engine_new(&cfg, &engine);
  if (st != S1_STATUS_OK) {
    fprintf(stderr, "s1_engine_new: %s: %s\n", s1_status_name(st), s1_last_error());
    return 1;
  }

  s1_synth_params params;
  s1_synth_params_default(&params);
  params.max_frames = 64;
  s1_audio *audio = NULL;
  st = s1_synthesize(engine, argv[3], &params, &audio);
  if (st != S1_STATUS_OK) {
    fprintf(stderr, "s1_synthesize: %s: %s\n", s1_status_name(st), s1_last_error());
    s1_engine_free(engine);
    return 1;
  }
  int ok = write_wav(argv[2], audio->samples, audio->num_samples, audio->sample_rate_hz);
  printf("wrote %s: %zu samples at %u Hz\n", argv[2], audio->num_samples, audio->sample_rate_hz);
  s1_audio_free(audio);
  s1_engine_free(engine);
  return ok ? 0 : 1;
}
