'use strict'
// The committed index.d.ts must declare everything the addon exports at run time.
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const s1 = require('..')

const dts = fs.readFileSync(path.join(__dirname, '..', 'index.d.ts'), 'utf8')

test('node_typings_declare_every_export', () => {
  for (const name of Object.keys(s1)) {
    assert.match(dts, new RegExp(`export declare (class|function) ${name}\\b`), `index.d.ts lacks ${name}`)
  }
})

test('node_typings_declare_every_method', () => {
  const classes = { Engine: s1.Engine, AudioStream: s1.AudioStream, Voice: s1.Voice }
  for (const [cls, ctor] of Object.entries(classes)) {
    const members = [...Object.getOwnPropertyNames(ctor.prototype), ...Object.getOwnPropertyNames(ctor)]
      .filter((m) => !['constructor', 'length', 'name', 'prototype', 'arguments', 'caller'].includes(m) && !m.startsWith('_'))
    for (const m of members) {
      assert.match(dts, new RegExp(`\\b${m}\\b[(<:]|get ${m}\\(`), `index.d.ts lacks ${cls}.${m}`)
    }
  }
})
