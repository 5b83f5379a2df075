'use strict'
// Synthesises text to a 16-bit WAV file with the Node addon, streaming chunks as they decode.
// Usage: node synth.js BUNDLE_DIR OUT.wav "Text to speak."  (ORT_DYLIB_PATH names libonnxruntime)
const fs = require('node:fs')
const { Engine } = require('../../bindings/node')

function wav (pcm, rateHz) {
  const out = Buffer.alloc(44 + pcm.length * 2)
  out.write('RIFF', 0)
  out.writeUInt32LE(36 + pcm.length * 2, 4)
  out.write('WAVEfmt ', 8)
  out.writeUInt32LE(16, 16)
  out.writeUInt16LE(1, 20) // PCM
  out.writeUInt16LE(1, 22) // mono
  out.writeUInt32LE(rateHz, 24)
  out.writeUInt32LE(rateHz * 2, 28)
  out.writeUInt16LE(2, 32)
  out.writeUInt16LE(16, 34)
  out.write('data', 36)
  out.writeUInt32LE(pcm.length * 2, 40)
  pcm.forEach((s, i) => out.writeInt16LE(Math.round(Math.max(-1, Math.min(1, s)) * 32767), 44 + 2 * i))
  return out
}

async function main () {
  const [bundleDir, outPath, text] = process.argv.slice(2)
  if (!text) {
    console.error('usage: node synth.js BUNDLE_DIR OUT.wav TEXT')
    process.exit(2)
  }
  const engine = await Engine.load({ bundleDir })
  const chunks = []
  for await (const chunk of engine.stream(text, { maxFrames: 64 })) chunks.push(chunk)
  const pcm = new Float32Array(chunks.reduce((n, c) => n + c.length, 0))
  let at = 0
  for (const c of chunks) { pcm.set(c, at); at += c.length }
  fs.writeFileSync(outPath, wav(pcm, engine.sampleRateHz))
  console.log(`wrote ${outPath}: ${pcm.length} samples at ${engine.sampleRateHz} Hz`)
}

main().catch((err) => {
  console.error(`${err.code || 'Error'}: ${err.message}`)
  process.exit(1)
})
