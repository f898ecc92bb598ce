/**
 * Mailstack services as real processes, one per service through the CLI
 * (`mailstack serve <service> --config FILE`), as the containers run them, so each can be killed,
 * traced and measured on its own: the fault tests run them from the TypeScript sources
 * (ts-node), the benchmark (bench/lib/mailstack.ts) as compiled JavaScript.
 *
 * The containers run compiled JavaScript (Dockerfile: tsc → dist/, NODE_ENV=production). The
 * `js` runtime does the same: it transpiles the service sources once per process into
 * node_modules/.cache/mailstack-bench-<pid> (no type check, like ts-node's transpile-only) and runs
 * `node cli/main.js` from there. The `ts-node` runtime runs the sources through ts-node instead.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, existsSync, promises as fs, openSync, readFileSync, rmSync } from "node:fs";
import * as path from "node:path";
import { type Mem, MemSampler, memOf, peakRssOf } from "./procmem";
import { waitFor, within } from "./wait";

const REPO = path.resolve(__dirname, "..", "..");
const log = (msg: string) => process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);

export type ServiceName = "smtp" | "pop3" | "imap" | "dns" | "queue";

export const NODE = path.join(REPO, "node_modules", ".bin", "node");
/**
 * One build directory per harness process (two runs at once must not delete each other's build),
 * removed when the harness exits. MAILSTACK_BENCH_BUILD_DIR names a fixed one that is kept (with
 * MAILSTACK_BENCH_NO_BUILD=1, a second run reuses it).
 */
export const BUILD_DIR = process.env.MAILSTACK_BENCH_BUILD_DIR
  ? path.resolve(process.env.MAILSTACK_BENCH_BUILD_DIR)
  : path.join(REPO, "node_modules", ".cache", `mailstack-bench-${process.pid}`);
if (!process.env.MAILSTACK_BENCH_BUILD_DIR) process.once("exit", () => rmSync(BUILD_DIR, { recursive: true, force: true }));
const SOURCE_DIRS = ["cli", "config", "lib", "store", "smtp", "pop3", "imap", "dns", "queue"];

const START_EXPORT: Record<ServiceName, string> = {
  smtp: "startSmtp",
  pop3: "startPop3",
  imap: "startImap",
  dns: "startDns",
  queue: "startQueue",
};

/**
 * Whether a service exists yet in the working tree: its folder has an index.ts exporting
 * `start<Name>`, and everything the CLI needs for it is there. Benchmark scenarios and fault tests
 * of missing services are skipped, so both run whatever has landed.
 */
export function serviceAvailable(name: ServiceName): boolean {
  const index = path.join(REPO, name, "index.ts");
  if (!existsSync(index)) return false;
  if (!new RegExp(`export\\s+(async\\s+)?(function|const)\\s+${START_EXPORT[name]}\\b`).test(readFileSync(index, "utf8"))) return false;
  // POP3 and IMAP read through the shared store.
  if ((name === "pop3" || name === "imap") && !existsSync(path.join(REPO, "store", "mailstore.ts"))) return false;
  return true;
}

let built: Promise<void> | null = null;

/** Transpiles the service sources to CommonJS under BUILD_DIR (once per process). */
export function buildMailstack(): Promise<void> {
  // MAILSTACK_BENCH_NO_BUILD=1 runs what is already in BUILD_DIR (to try a change there quickly).
  if (process.env.MAILSTACK_BENCH_NO_BUILD === "1" && existsSync(path.join(BUILD_DIR, "cli", "main.js"))) built ??= Promise.resolve();
  built ??= (async () => {
    const ts = require("typescript") as typeof import("typescript");
    const started = Date.now();
    await fs.rm(BUILD_DIR, { recursive: true, force: true });
    let files = 0;
    const walk = async (rel: string): Promise<void> => {
      const abs = path.join(REPO, rel);
      let entries: import("node:fs").Dirent[];
      try {
        entries = await fs.readdir(abs, { withFileTypes: true });
      } catch {
        return;
      }
      for (const e of entries) {
        const r = path.join(rel, e.name);
        if (e.isDirectory()) {
          if (e.name !== "node_modules" && !e.name.startsWith(".")) await walk(r);
        } else if (e.name.endsWith(".ts") && !e.name.endsWith(".d.ts") && !e.name.endsWith(".test.ts")) {
          const src = await fs.readFile(path.join(REPO, r), "utf8");
          const out = ts.transpileModule(src, {
            fileName: r,
            compilerOptions: {
              module: ts.ModuleKind.CommonJS,
              target: ts.ScriptTarget.ES2023,
              esModuleInterop: true,
              resolveJsonModule: true,
              sourceMap: false,
            },
          });
          const dest = path.join(BUILD_DIR, r.replace(/\.ts$/, ".js"));
          await fs.mkdir(path.dirname(dest), { recursive: true });
          await fs.writeFile(dest, out.outputText);
          files++;
        } else if (e.name.endsWith(".json")) {
          await fs.mkdir(path.join(BUILD_DIR, rel), { recursive: true });
          await fs.copyFile(path.join(REPO, r), path.join(BUILD_DIR, r));
        }
      }
    };
    for (const d of SOURCE_DIRS) await walk(d);
    // config/load.ts finds stacks/ relative to itself; the benchmark passes absolute --config files.
    log(`transpiled ${files} files to ${path.relative(REPO, BUILD_DIR)} in ${Date.now() - started} ms`);
  })();
  return built;
}

/** A mail user of the stack config, with the password the clients log in with. */
export interface StackUser {
  name: string;
  password: string;
  /** argon2id hash of `password` (same parameters as `mailstack hash-password`). */
  hash: string;
}

export interface StackOptions {
  dataDir: string;
  users: StackUser[];
  /** Endpoints to enable, all on 127.0.0.1 port 0 unless given. */
  listen: Partial<Record<"smtp" | "submission" | "smtps" | "pop3" | "pop3s" | "imap" | "imaps" | "dns", number>>;
  certFile: string;
  keyFile: string;
  /** Extra `mailstack:` keys (unprefixed), merged over the defaults. */
  extra?: Record<string, unknown>;
}

/**
 * The stack config the benchmark and the fault tests run mailstack with: lx.com on loopback,
 * limits raised for load.
 */
export function stackConfig(o: StackOptions): Record<string, unknown> {
  const listen: Record<string, unknown> = { address: "127.0.0.1" };
  for (const ep of ["smtp", "submission", "smtps", "pop3", "pop3s", "imap", "imaps", "dns"] as const)
    listen[ep] = o.listen[ep] !== undefined ? o.listen[ep] : false;
  const base: Record<string, unknown> = {
    domain: "lx.com",
    hostname: "mail.lx.com",
    publicAddress: "127.0.0.1",
    trustedNetworks: ["127.0.0.0/8"],
    admin: o.users[0]!.name,
    dataDir: o.dataDir,
    users: o.users.map((u) => ({ name: u.name, passwordHash: u.hash })),
    listen,
    tls: { certFile: o.certFile, keyFile: o.keyFile },
    // smtp-source opens 20 sessions from one address; the load clients open tens.
    limits: { connectionsPerClient: 1000, maxConnections: 5000 },
    // dnsperf sends everything from 127.0.0.1: response rate limiting would measure the limiter.
    dns: { reverseNetwork: "127.0.0.0/24", rateLimit: 0 },
    resolvers: [],
    reverseLookups: false,
  };
  const merged = { ...base, ...(o.extra ?? {}) } as Record<string, unknown>;
  for (const k of ["limits", "dns", "queue"] as const) {
    if (o.extra?.[k] && base[k]) merged[k] = { ...(base[k] as object), ...(o.extra[k] as object) };
  }
  const config: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(merged)) config[`mailstack:${k}`] = v;
  return { config };
}

export async function writeStackConfig(file: string, o: StackOptions): Promise<string> {
  await fs.mkdir(path.dirname(file), { recursive: true });
  await fs.writeFile(file, JSON.stringify(stackConfig(o), null, 2));
  return file;
}

export interface Listener {
  name: string;
  address: string;
  port: number;
  protocol: string;
}

export interface RunOptions {
  runtime: "js" | "ts-node";
  /** Directory for `--cpu-prof` output; profiling is off when absent. */
  cpuProfDir?: string;
  logFile: string;
  env?: Record<string, string>;
}

/** One mailstack service process started by a test or the benchmark. */
export class ServiceProcess {
  private exited: Promise<void>;
  exitCode: number | null = null;
  sampler: MemSampler;

  private constructor(
    readonly name: ServiceName,
    readonly child: ChildProcess,
    readonly listeners: Listener[],
    readonly logFile: string,
  ) {
    this.exited = new Promise((r) =>
      child.once("exit", (code) => {
        this.exitCode = code;
        r();
      }),
    );
    this.sampler = new MemSampler(() => (this.alive ? [child.pid!] : []), 200);
  }

  get pid(): number {
    return this.child.pid!;
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  port(endpoint: string): number {
    const l = this.listeners.find((x) => x.name === endpoint);
    if (!l) throw new Error(`${this.name} has no listener ${endpoint} (has ${this.listeners.map((x) => x.name).join(", ")})`);
    return l.port;
  }

  mem(): Mem {
    return memOf([this.pid]);
  }

  /** Peak memory so far: RSS from the kernel's VmHWM (or the sampler), PSS from the sampler. */
  peak(): Mem {
    if (this.alive) this.sampler.sample();
    const hwm = this.alive ? peakRssOf(this.pid) : 0;
    const p = this.sampler.peak;
    return { rss: Math.max(hwm, p.rss, this.lastPeak.rss), pss: Math.max(p.pss, this.lastPeak.pss), processes: 1 };
  }

  private lastPeak: Mem = { rss: 0, pss: 0, processes: 1 };

  static async start(name: ServiceName, configFile: string, o: RunOptions): Promise<ServiceProcess> {
    const args: string[] = [];
    if (o.cpuProfDir) {
      await fs.mkdir(o.cpuProfDir, { recursive: true });
      args.push("--cpu-prof", `--cpu-prof-dir=${o.cpuProfDir}`, `--cpu-prof-name=${name}-${Date.now()}.cpuprofile`);
    }
    if (o.runtime === "ts-node") args.push("-r", "ts-node/register/transpile-only", path.join(REPO, "cli", "main.ts"));
    else {
      await buildMailstack();
      args.push(path.join(BUILD_DIR, "cli", "main.js"));
    }
    args.push("serve", name, "--config", configFile);
    await fs.mkdir(path.dirname(o.logFile), { recursive: true });
    const fd = openSync(o.logFile, "a");
    const child = spawn(NODE, args, {
      cwd: REPO,
      stdio: ["ignore", fd, fd],
      env: { ...process.env, NODE_ENV: "production", MAILSTACK_LOG_LEVEL: "info", ...(o.env ?? {}) },
    });
    closeSync(fd);
    let exited = false;
    child.once("exit", () => (exited = true));
    const listeners = await waitFor(
      async () => {
        if (exited) throw new Error(`mailstack ${name} exited during start; log ${o.logFile}:\n${(await readTail(o.logFile)).trim()}`);
        const text = await fs.readFile(o.logFile, "utf8").catch(() => "");
        for (const line of text.split("\n")) {
          if (!line.includes('"listening"')) continue;
          try {
            const j = JSON.parse(line) as { msg?: string; listeners?: Listener[] };
            if (j.msg === "listening" && Array.isArray(j.listeners)) return j.listeners;
          } catch {
            // not JSON
          }
        }
        return null;
      },
      `mailstack ${name} to log "listening" (${o.logFile})`,
      60_000,
      50,
    );
    const sp = new ServiceProcess(name, child, listeners, o.logFile);
    sp.sampler.start();
    return sp;
  }

  /** SIGTERM (graceful: the CLI closes the service, writing any CPU profile), then SIGKILL. */
  async stop(timeoutMs = 10_000): Promise<void> {
    if (!this.alive) return;
    this.lastPeak = this.peak();
    this.sampler.stop();
    this.child.kill("SIGTERM");
    const done = await within(this.exited, timeoutMs);
    if (!done && this.alive) {
      this.child.kill("SIGKILL");
      await this.exited;
    }
  }

  kill9(): Promise<void> {
    this.sampler.stop();
    if (this.alive) this.child.kill("SIGKILL");
    return this.exited;
  }
}

async function readTail(file: string, bytes = 4000): Promise<string> {
  const t = await fs.readFile(file, "utf8").catch(() => "");
  return t.slice(-bytes);
}
