// Types of the s1-mini Node package. The native classes, option objects and version() are
// generated from the #[napi] items of src/lib.rs into binding.d.ts (`napi build --platform`, see
// docs/packaging.md); this file re-exports them and types what index.js adds (Engine.stream,
// AudioStream, options.voices). __test__/typings.test.js checks every runtime export and method
// against the two files.
import type { EngineOptions, NativeStream, SynthOptions as NativeSynthOptions, Voice } from './binding'
export type { EngineOptions } from './binding'
export { NativeStream, Voice, version } from './binding'

/** Options of one synthesis (the native ones, plus `voices`); omitted fields take the defaults. */
export interface SynthOptions extends NativeSynthOptions {
  /** Reference voices to speak in, in prompt order (fish-speech's reference prompt). Default none. */
  voices?: Array<Voice>
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

/** Chunks of PCM as they are decoded; ends quietly when cancelled. */
export declare class AudioStream implements AsyncIterable<Float32Array> {
  private constructor()
  /** Stops the synthesis; safe at any time. */
  cancel(): void
  /** The next chunk, or null at the end (or after cancel()). */
  next(): Promise<Float32Array | null>
  [Symbol.asyncIterator](): AsyncIterator<Float32Array>
}
