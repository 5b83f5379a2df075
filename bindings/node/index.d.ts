// Types of the s1-mini Node addon (index.js + the native s1_mini.node).
// Kept in step with src/lib.rs by __test__/typings.test.js, which checks every runtime export
// and method against this file.

/** Options of `Engine.load`; omitted fields take the library's defaults. */
export interface EngineOptions {
  /** Bundle directory (holds manifest.json). */
  bundleDir: string
  /** "auto" (default), "onnx-cpu", "onnx-cuda", "tensorrt" or "cuda". */
  backend?: string
  /** Path of libonnxruntime; default: ORT_DYLIB_PATH, then beside the addon. */
  ortLibraryPath?: string
  /** Check each bundle file's sha256 at load (default true). */
  verifyHashes?: boolean
  /** ONNX Runtime threads per operator; 0 = its default. */
  intraOpThreads?: number
}

/** Options of one synthesis; omitted fields take the library's defaults. */
export interface SynthOptions {
  /** Softmax temperature in [0, 2]; 0 = greedy. Default 0.8. */
  temperature?: number
  /** Nucleus mass kept, in (0, 1]. Default 0.8. */
  topP?: number
  /** Repetition penalty in (0, 2); 1 = none. Default 1.1. */
  repetitionPenalty?: number
  /** Maximum length in frames (21.53 per second of audio). Default 1024. */
  maxFrames?: number
  /** Sampler seed (a non-negative integer below 2^53). Default 0. */
  seed?: number
  /** Reproduce fish-speech exactly (its quirks included). Default false. */
  fishSpeechCompat?: boolean
  /** Frames in the first streamed chunk. Default 4. */
  firstChunkFrames?: number
  /** Frames in each later streamed chunk. Default 16. */
  chunkFrames?: number
  /** Reference voices to speak in, in prompt order (fish-speech's reference prompt). Default none. */
  voices?: Array<Voice>
  /** Reuse the voices' cached prompt prefix (same audio, faster first chunk). Default true. */
  prefixCache?: boolean
  /**
   * Special-token names typed in the text and the voices' transcripts ("<|im_end|>", ...) become
   * control tokens, as fish-speech parses them. Default false (plain text); only for trusted text.
   */
  parseSpecialTokens?: boolean
}

/** Errors thrown or rejected by the addon carry the C status name as `code`. */
export interface S1Error extends Error {
  /** e.g. "S1_STATUS_BUNDLE_NOT_FOUND", "S1_STATUS_CANCELLED". */
  code: string
}

/** A loaded model. Share one engine; calls may overlap. */
export declare class Engine {
  private constructor()
  /** Loads a bundle off the JS thread. */
  static load(options: EngineOptions): Promise<Engine>
  /**
   * Synthesises `text` to PCM (f32 mono at `sampleRateHz`) off the JS thread. Aborting `signal`
   * rejects the promise with code "S1_STATUS_CANCELLED".
   */
  synthesize(text: string, options?: SynthOptions | undefined | null, signal?: AbortSignal | undefined | null): Promise<Float32Array>
  /**
   * Encodes reference audio (mono f32 at `sampleRate` Hz, any rate; resampled) and what it says
   * into a voice, off the JS thread. Rejects with "S1_STATUS_INVALID_ARGUMENT" for no samples,
   * NaN/Inf samples, an empty transcript, or audio longer than the codec encodes (about 190 s).
   */
  createVoice(audio: Float32Array, sampleRate: number, transcript: string): Promise<Voice>
  /** Streams `text` as chunks; iterate with `for await`. Aborting `signal` cancels it. */
  stream(text: string, options?: SynthOptions | undefined | null, signal?: AbortSignal | undefined | null): AudioStream
  /** The native half of `stream()`. */
  streamNative(text: string, options?: SynthOptions | undefined | null, voices?: Array<Voice> | undefined | null): NativeStream
  /** Sample rate of the audio in Hz. */
  get sampleRateHz(): number
  /** The backend in use ("onnx-cpu", ...). */
  get backend(): string
}

/** A reference voice (codes + transcript of a recording) for voice cloning. Immutable. */
export declare class Voice {
  private constructor()
  /** Loads a voice file; throws with code "S1_STATUS_VOICE_INVALID" when truncated or corrupt. */
  static load(path: string): Voice
  /** Writes the voice file (docs/voice-format.md). */
  save(path: string): void
  /** Codec frames of the reference (21.53 per second). */
  get frames(): number
  /** What the reference says. */
  get transcript(): string
}

/** The native half of an AudioStream. */
export declare class NativeStream {
  private constructor()
  /** The next chunk, or null after the last; rejects with "S1_STATUS_CANCELLED" after cancel(). */
  next(): Promise<Float32Array | null>
  /** Stops the stream. */
  cancel(): void
}

/** Chunks of PCM as they are decoded; ends quietly when cancelled. */
export declare class AudioStream implements AsyncIterable<Float32Array> {
  private constructor()
  /** Stops the synthesis; safe at any time. */
  cancel(): void
  /** The next chunk, or null at the end (or after cancel()). */
  next(): Promise<Float32Array | null>
  [Symbol.asyncIterator](): AsyncIterator<Float32Array>
}

/** Library version, "MAJOR.MINOR.PATCH". */
export declare function version(): string
