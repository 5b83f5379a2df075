/* A stand-in libonnxruntime that reports version 1.10.0, older than the 1.31 API s1-mini needs
 * (scripts/test-packages.sh): the engine must refuse it with a message, not crash. */
typedef struct {
  const void *(*GetApi)(unsigned version);
  const char *(*GetVersionString)(void);
} OrtApiBase;

static const void *get_api(unsigned version) {
  (void)version;
  return 0;
}
static const char *version_string(void) { return "1.10.0"; }
static const OrtApiBase base = {get_api, version_string};

__attribute__((visibility("default"))) const OrtApiBase *OrtGetApiBase(void) { return &base; }
