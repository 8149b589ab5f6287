// The type tests: the examples and wrong-uses.ts compile under tsc --strict --noEmit (every
// @ts-expect-error in wrong-uses.ts is used), and wrong-uses.ts without its directives fails to
// compile, with one error at each line that followed a directive. Needs dist/types (node build.mjs).
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const tsc = join(here, "..", "node_modules", "typescript", "bin", "tsc");

function compile(project) {
  try {
    execFileSync(process.execPath, [tsc, "-p", project, "--pretty", "false"], { encoding: "utf8", stdio: "pipe" });
    return { ok: true, output: "" };
  } catch (err) {
    return { ok: false, output: String(err.stdout) + String(err.stderr) };
  }
}

const good = compile(join(here, "tsconfig.json"));
if (!good.ok) {
  console.error("the examples (or an unused @ts-expect-error in wrong-uses.ts) do not compile:\n" + good.output);
  process.exit(1);
}

const lines = readFileSync(join(here, "wrong-uses.ts"), "utf8").split("\n");
const expected = new Set();
const stripped = lines.map((line, i) => {
  if (!line.trim().startsWith("// @ts-expect-error")) return line;
  expected.add(i + 1); // 1-based: the directive's line is now blank, the wrong use is on the next line
  return "";
});
const wrongLines = new Set([...expected].map((n) => n + 1));
const tmp = join(here, ".tmp");
rmSync(tmp, { recursive: true, force: true });
mkdirSync(tmp);
writeFileSync(join(tmp, "wrong-uses.ts"), stripped.join("\n"));
const cfg = JSON.parse(readFileSync(join(here, "tsconfig.json"), "utf8"));
writeFileSync(join(tmp, "tsconfig.json"), JSON.stringify({ ...cfg, include: ["wrong-uses.ts"] }));
const bad = compile(join(tmp, "tsconfig.json"));
rmSync(tmp, { recursive: true, force: true });
if (bad.ok) {
  console.error("wrong-uses.ts compiled without its @ts-expect-error directives: the types accept wrong uses");
  process.exit(1);
}
const errorLines = new Set([...bad.output.matchAll(/wrong-uses\.ts\((\d+),\d+\): error/g)].map((m) => Number(m[1])));
const missing = [...wrongLines].filter((n) => !errorLines.has(n));
const extra = [...errorLines].filter((n) => !wrongLines.has(n));
if (missing.length || extra.length) {
  console.error(`wrong-uses.ts: no error at lines ${missing}; unexpected errors at lines ${extra}\n${bad.output}`);
  process.exit(1);
}
console.log(`type tests: the examples compile; all ${wrongLines.size} wrong uses fail to compile`);
