// Builds the package: dist/index.js (one ES module, no dependencies: the browser build, also
// what Node imports) and dist/types/*.d.ts.
//
//   node build.mjs           dist/
//   node build.mjs --static  dist/, and the same module as ../../node/static/client.js (served at /client.js)
//   node build.mjs --check   fail unless ../../node/static/client.js is exactly what the source builds
//   node build.mjs --size    the minified + gzipped size of the browser build
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const pkg = JSON.parse(readFileSync(join(here, "package.json"), "utf8"));
const STATIC = join(here, "..", "..", "node", "static", "client.js");

async function bundle(minify = false) {
  const out = await esbuild.build({
    entryPoints: [join(here, "src", "index.ts")],
    bundle: true,
    format: "esm",
    platform: "neutral",
    target: "es2020",
    minify,
    write: false,
    charset: "utf8",
    legalComments: "none",
    banner: minify ? {} : {
      js: `// ${pkg.name} ${pkg.version}: the Herald client (CONTRACT.md §4-§6), one ES module, no dependencies.\n` +
          "// Built from clients/js/src by `npm run build:static`; do not edit (CI checks it is the build).",
    },
  });
  return out.outputFiles[0].text;
}

const arg = process.argv[2];
if (arg === "--check") {
  const built = await bundle();
  let current = "";
  try { current = readFileSync(STATIC, "utf8"); } catch { /* missing: differs */ }
  if (built !== current) {
    console.error("node/static/client.js is not the build of clients/js/src: run `npm run build:static` in clients/js");
    process.exit(1);
  }
  console.log("node/static/client.js is the build of clients/js/src");
} else if (arg === "--size") {
  const min = await bundle(true);
  const gz = gzipSync(Buffer.from(min), { level: 9 }).length;
  console.log(`browser build: ${(await bundle()).length} bytes; minified ${min.length} bytes; minified + gzipped ${gz} bytes (${(gz / 1024).toFixed(2)} KiB)`);
} else {
  const code = await bundle();
  mkdirSync(join(here, "dist"), { recursive: true });
  writeFileSync(join(here, "dist", "index.js"), code);
  execFileSync(process.execPath, [join(here, "node_modules", "typescript", "bin", "tsc"), "-p", join(here, "tsconfig.json"),
    "--noEmit", "false"], { stdio: "inherit" });
  if (arg === "--static") writeFileSync(STATIC, code);
}
