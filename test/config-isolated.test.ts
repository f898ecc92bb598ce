/**
 * config/isolated.ts: the services load their stack in a worker thread that exits, so zod and the
 * YAML parser do not stay resident. The worker path runs only from compiled JavaScript (the
 * container image, the benchmark), so this test transpiles config/ and lib/ into a directory under
 * node_modules/.cache (where zod and yaml resolve) and runs it with Node, as the image does.
 */
import { execFile } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { promisify } from "node:util";
import ts from "typescript";
import { loadStack, stackFile } from "../config/load";

const run = promisify(execFile);
const REPO = path.resolve(__dirname, "..");
const NODE = path.join(REPO, "node_modules", ".bin", "node");
const OUT = path.join(REPO, "node_modules", ".cache", `config-isolated-${process.pid}`);

beforeAll(() => {
  for (const dir of ["config", "lib"]) {
    for (const name of readdirSync(path.join(REPO, dir))) {
      if (!name.endsWith(".ts") || name.endsWith(".d.ts")) continue;
      const src = readFileSync(path.join(REPO, dir, name), "utf8");
      const js = ts.transpileModule(src, {
        fileName: name,
        compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2023, esModuleInterop: true },
      }).outputText;
      mkdirSync(path.join(OUT, dir), { recursive: true });
      writeFileSync(path.join(OUT, dir, name.replace(/\.ts$/, ".js")), js);
    }
  }
});
afterAll(() => rmSync(OUT, { recursive: true, force: true }));

/** Loads `file` through the compiled loadStackIsolated in a fresh Node; returns what it printed. */
async function loadCompiled(file: string): Promise<{ ok: boolean; out: Record<string, unknown> }> {
  const script = `
    const { loadStackIsolated } = require(${JSON.stringify(path.join(OUT, "config", "isolated.js"))});
    loadStackIsolated(${JSON.stringify(file)}).then(
      (config) => {
        const loaded = Object.keys(require.cache).filter((k) => /node_modules\\/(zod|yaml)\\//.test(k) || /schema\\.js$/.test(k));
        process.stdout.write(JSON.stringify({ config, loaded }));
      },
      (err) => process.stdout.write(JSON.stringify({ name: err.name, message: err.message, problems: err.problems })),
    );`;
  const { stdout } = await run(NODE, ["-e", script], { cwd: REPO });
  const out = JSON.parse(stdout) as Record<string, unknown>;
  return { ok: "config" in out, out };
}

describe("loadStackIsolated (compiled, as in the image)", () => {
  it("returns the same config as loadStack, and leaves neither zod nor the schema loaded", async () => {
    const file = stackFile("sina");
    const { ok, out } = await loadCompiled(file);
    expect(ok).toBe(true);
    const expected = loadStack(file);
    const got = out.config as typeof expected;
    // dataDir is resolved against the directory the loader lives in.
    expect({ ...got, dataDir: "" }).toEqual({ ...expected, dataDir: "" });
    expect(out.loaded).toEqual([]);
  });

  it("reports a bad config as a ConfigError with every key path", async () => {
    const dir = path.join(OUT, "stacks");
    mkdirSync(dir, { recursive: true });
    const file = path.join(dir, "bad.yaml");
    const text = readFileSync(stackFile("dev"), "utf8")
      .replace("mailstack:domain: lx.com", "mailstack:domain: not a domain")
      .replace("    smtp: 2525", "    smtp: 70000");
    writeFileSync(file, text);
    const { ok, out } = await loadCompiled(file);
    expect(ok).toBe(false);
    expect(out.name).toBe("ConfigError");
    const paths = (out.problems as Array<{ path: string }>).map((p) => p.path);
    expect(paths).toEqual(expect.arrayContaining(["mailstack:domain", "mailstack:listen.smtp"]));
    expect(out.message).toContain("mailstack:listen.smtp");
  });

  it("passes other errors through with their message", async () => {
    const { ok, out } = await loadCompiled(path.join(OUT, "no-such-stack.yaml"));
    expect(ok).toBe(false);
    expect(out.name).toBe("Error");
    expect(out.message).toMatch(/ENOENT|no such file/);
  });
});
