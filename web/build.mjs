// Builds the console into one directory: index.html, console.js (ESM, minified, bundled) and
// console.css (ours and xterm's). The Rust build copies web/ elsewhere, runs `npm ci` and
// `node build.mjs OUT`, so every path here is relative to this file.
//
//   node build.mjs OUT            build once
//   node build.mjs --watch OUT    rebuild on every change (for work on the console)

import { copyFile, mkdir, readdir, rm } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const watch = args.includes('--watch');
const outArgs = args.filter((arg) => arg !== '--watch');
if (outArgs.length !== 1) {
  console.error('usage: node build.mjs [--watch] OUTDIR');
  process.exit(2);
}
const outdir = resolve(outArgs[0]);
const expected = new Set(['index.html', 'console.js', 'console.css']);

// Copies index.html beside the bundle after each build, and refuses to leave any other file
// behind (the server serves exactly these three).
const finish = {
  name: 'taskfold-finish',
  setup(build) {
    build.onEnd(async (result) => {
      if (result.errors.length > 0) return;
      await copyFile(join(here, 'index.html'), join(outdir, 'index.html'));
      const extra = (await readdir(outdir)).filter((name) => !expected.has(name));
      if (extra.length > 0) {
        throw new Error(`the build wrote unexpected files: ${extra.join(', ')}`);
      }
      if (watch) console.log(`built ${outdir} at ${new Date().toLocaleTimeString()}`);
    });
  },
};

const options = {
  absWorkingDir: here,
  entryPoints: { console: 'src/main.jsx' },
  outdir,
  bundle: true,
  format: 'esm',
  minify: true,
  sourcemap: false,
  target: ['es2022'],
  jsx: 'automatic',
  jsxImportSource: 'preact',
  legalComments: 'eof',
  logLevel: 'warning',
  plugins: [finish],
};

await mkdir(outdir, { recursive: true });
for (const name of expected) await rm(join(outdir, name), { force: true });

if (watch) {
  const context = await esbuild.context(options);
  await context.watch();
  console.log(`watching ${here}/src, writing ${outdir}`);
} else {
  await esbuild.build(options);
}
