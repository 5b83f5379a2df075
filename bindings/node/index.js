'use strict'
// s1-mini for Node.js: the native addon plus an async iterator over streamed chunks.
// Build the addon with scripts/build-node.sh (cargo only); it lands beside this file.
const native = require('./s1_mini.node')

const CANCELLED = 'S1_STATUS_CANCELLED'

/**
 * Streams `text` as chunks of PCM: `for await (const chunk of engine.stream(text)) { ... }`.
 * Breaking out of the loop, `stream.cancel()` or aborting `signal` cancels the synthesis; the
 * loop then ends without an error. Other errors reject with `code` = status name.
 */
class AudioStream {
  constructor (nativeStream, signal) {
    this._native = nativeStream
    this._cancelled = false
    if (signal) {
      if (signal.aborted) this.cancel()
      else signal.addEventListener('abort', () => this.cancel(), { once: true })
    }
  }

  /** Stops the synthesis; safe at any time, from any callback. */
  cancel () {
    this._cancelled = true
    this._native.cancel()
  }

  /** The next chunk, or null at the end (or after cancel()). */
  async next () {
    try {
      return await this._native.next()
    } catch (err) {
      if (this._cancelled && err.code === CANCELLED) return null
      throw err
    }
  }

  [Symbol.asyncIterator] () {
    return {
      next: async () => {
        const chunk = await this.next()
        return chunk === null ? { done: true, value: undefined } : { done: false, value: chunk }
      },
      return: async () => {
        this.cancel()
        return { done: true, value: undefined }
      }
    }
  }
}

/** Starts a stream (synchronous: no audio is computed until the first chunk is awaited). */
native.Engine.prototype.stream = function stream (text, options, signal) {
  return new AudioStream(this.streamNative(text, options, voicesOf(options)), signal)
}

// `options.voices` (an array of Voice) goes to the native calls as their own argument.
function voicesOf (options) {
  const voices = options && options.voices
  if (voices === undefined || voices === null) return undefined
  if (!Array.isArray(voices)) throw new TypeError('options.voices must be an array of Voice')
  return voices
}

const nativeSynthesize = native.Engine.prototype.synthesize
/** Synthesises `text` (in `options.voices`, if given) to PCM off the JS thread. */
native.Engine.prototype.synthesize = function synthesize (text, options, signal) {
  return nativeSynthesize.call(this, text, options, signal, voicesOf(options))
}

module.exports = {
  Engine: native.Engine,
  Voice: native.Voice,
  AudioStream,
  version: native.version
}
