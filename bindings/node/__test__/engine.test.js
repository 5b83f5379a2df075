'use strict'
// node --test: the addon's promise, stream, cancellation and error-code behaviour.
// Bundle tests use S1_TEST_BUNDLE or tests/fixtures/tiny and are skipped without either.
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const s1 = require('..')

const bundle = process.env.S1_TEST_BUNDLE || path.join(__dirname, '..', '..', '..', 'tests', 'fixtures', 'tiny')
const haveBundle = fs.existsSync(path.join(bundle, 'manifest.json'))
const skip = haveBundle ? false : `no bundle at ${bundle}`
const small = { maxFrames: 24, firstChunkFrames: 2, chunkFrames: 4, seed: 7 }

test('node_version_is_semver', () => {
  assert.match(s1.version(), /^\d+\.\d+\.\d+$/)
})

test('node_missing_bundle_rejects_with_status_code', async () => {
  await assert.rejects(s1.Engine.load({ bundleDir: '/nonexistent/bundle' }), (err) => {
    assert.ok(err instanceof Error)
    assert.equal(err.code, 'S1_STATUS_BUNDLE_NOT_FOUND')
    assert.match(err.message, /\/nonexistent\/bundle/)
    return true
  })
})

test('node_unknown_backend_rejects_invalid_argument', async () => {
  await assert.rejects(s1.Engine.load({ bundleDir: bundle, backend: 'warp-drive' }), { code: 'S1_STATUS_INVALID_ARGUMENT' })
})

test('node_bundle', { skip }, async (t) => {
  const engine = await s1.Engine.load({ bundleDir: bundle, backend: 'onnx-cpu' })
  assert.equal(engine.backend, 'onnx-cpu')
  assert.equal(engine.sampleRateHz, 44100)

  await t.test('node_synthesize_resolves_float32array', async () => {
    const pcm = await engine.synthesize('Hello from Node.', small)
    assert.ok(pcm instanceof Float32Array)
    assert.ok(pcm.length > 0)
  })

  await t.test('node_synthesize_empty_text_rejects_empty_text', async () => {
    await assert.rejects(engine.synthesize('', small), { code: 'S1_STATUS_EMPTY_TEXT' })
  })

  await t.test('node_synthesize_bad_param_rejects_invalid_argument', async () => {
    await assert.rejects(engine.synthesize('Hi.', { temperature: -1 }), { code: 'S1_STATUS_INVALID_ARGUMENT' })
    await assert.rejects(engine.synthesize('Hi.', { seed: -1 }), { code: 'S1_STATUS_INVALID_ARGUMENT' })
  })

  await t.test('node_synthesize_aborted_signal_rejects', async () => {
    const ac = new AbortController()
    const p = engine.synthesize('Hello from Node.', small, ac.signal)
    ac.abort()
    // Aborted before it started: napi's AbortError; while running: the engine's cancel.
    await assert.rejects(p, (err) => {
      assert.ok(err.code === 'S1_STATUS_CANCELLED' || err.name === 'AbortError' || /abort/i.test(err.message), `${err.code} ${err.message}`)
      return true
    })
  })

  await t.test('node_stream_iterates_chunks', async () => {
    let chunks = 0
    let samples = 0
    for await (const chunk of engine.stream('Hello from Node.', small)) {
      assert.ok(chunk instanceof Float32Array)
      chunks++
      samples += chunk.length
    }
    assert.ok(chunks > 0 && samples > 0)
  })

  await t.test('node_stream_break_cancels_quietly', async () => {
    const stream = engine.stream('Hello from Node.', small)
    let chunks = 0
    for await (const chunk of stream) { // eslint-disable-line no-unused-vars
      chunks++
      break
    }
    assert.equal(chunks, 1)
    assert.equal(await stream.next(), null) // cancelled: ends, no error
  })

  await t.test('node_stream_consumer_throw_cancels_and_propagates', async () => {
    const stream = engine.stream('Hello from Node.', small)
    let chunks = 0
    await assert.rejects(async () => {
      for await (const chunk of stream) { // eslint-disable-line no-unused-vars
        chunks++
        throw new Error('boom')
      }
    }, /boom/)
    assert.equal(chunks, 1)
    assert.equal(await stream.next(), null) // the loop's return() cancelled the native stream
  })

  await t.test('node_stream_abort_signal_ends_stream', async () => {
    const ac = new AbortController()
    ac.abort()
    const stream = engine.stream('Hello from Node.', small, ac.signal)
    assert.equal(await stream.next(), null)
  })

  await t.test('node_stream_empty_text_throws_empty_text', () => {
    assert.throws(() => engine.stream('', small), { code: 'S1_STATUS_EMPTY_TEXT' })
  })

  await t.test('node_voice_create_save_load_and_synthesize', async () => {
    const audio = new Float32Array(22050) // 1 s at 22.05 kHz
    for (let i = 0; i < audio.length; i++) audio[i] = 0.3 * Math.sin(i * 0.06) + 0.02 * Math.cos(i * 1.7)
    const voice = await engine.createVoice(audio, 22050, 'A reference.')
    assert.ok(voice instanceof s1.Voice)
    assert.equal(voice.frames, 22)
    assert.equal(voice.transcript, 'A reference.')
    const file = path.join(require('node:os').tmpdir(), `s1mini-node-voice-${process.pid}.s1v`)
    voice.save(file)
    const loaded = s1.Voice.load(file)
    assert.equal(loaded.frames, 22)
    const opts = { maxFrames: 6, seed: 2, voices: [loaded] }
    const a = await engine.synthesize('In that voice.', opts)
    const b = await engine.synthesize('In that voice.', { ...opts, prefixCache: false })
    assert.ok(a.length > 0)
    assert.deepEqual(a, b)
    const chunks = []
    for await (const c of engine.stream('In that voice.', opts)) chunks.push(...c)
    // The stream decodes through the stateful codec step graph: equal to float rounding.
    const streamed = Float32Array.from(chunks)
    assert.equal(streamed.length, a.length)
    const peak = a.reduce((m, x) => Math.max(m, Math.abs(x)), 0)
    const diff = streamed.reduce((m, x, i) => Math.max(m, Math.abs(x - a[i])), 0)
    assert.ok(diff <= 1e-5 * peak, `stream vs synth: max diff ${diff}, peak ${peak}`)
    fs.writeFileSync(file, 'S1VOICE')
    assert.throws(() => s1.Voice.load(file), { code: 'S1_STATUS_VOICE_INVALID' })
    fs.unlinkSync(file)
  })

  await t.test('node_voice_bad_audio_rejects_invalid_argument', async () => {
    await assert.rejects(engine.createVoice(new Float32Array(0), 44100, 'x'), { code: 'S1_STATUS_INVALID_ARGUMENT' })
    await assert.rejects(engine.createVoice(Float32Array.from([0, NaN]), 44100, 'x'), /NaN/)
    await assert.rejects(engine.createVoice(new Float32Array(600 * 8000), 8000, 'x'), /longer than the codec encodes/)
  })
})
