// Regenerates bindings/node/binding.d.ts and binding.js with @napi-rs/cli's own generators, from
// the type definitions napi-derive wrote while cargo compiled the addon (NAPI_TYPE_DEF_TMP_FOLDER),
// with the options `napi build --platform --js binding.js --dts binding.d.ts` uses.
// scripts/test-packages.sh diffs the result against the committed files; `napi build` itself
// would compile every dependency again for its explicit --target (docs/packaging.md).
//   node napi_generate.mjs CLI_DIST_INDEX_JS PACKAGE_JSON TYPEDEF_DIR OUT_DIR
import fs from 'node:fs'
import { pathToFileURL } from 'node:url'

const [cli, packageJson, typeDefDir, outDir] = process.argv.slice(2)
const { generateTypeDef, writeJsBinding } = await import(pathToFileURL(cli).href)
const pkg = JSON.parse(fs.readFileSync(packageJson, 'utf8'))
fs.mkdirSync(outDir, { recursive: true })
// A root loader with no WASI flavours declares __napiBindingTarget when it exports anything.
const typeDef = await generateTypeDef({
  typeDefDir,
  cwd: outDir,
  declareBindingTarget: (exports) => exports.length > 0
})
if (typeDef.exports.length === 0) throw new Error(`no type definitions in ${typeDefDir}`)
fs.writeFileSync(`${outDir}/binding.d.ts`, typeDef.dts)
await writeJsBinding({
  platform: true,
  idents: typeDef.exports,
  jsBinding: 'binding.js',
  binaryName: pkg.napi.binaryName,
  packageName: (pkg.napi && pkg.napi.packageName) || pkg.name,
  version: pkg.version,
  outputDir: outDir
})
console.log(`generated binding.js and binding.d.ts (exports: ${typeDef.exports.join(', ')})`)
