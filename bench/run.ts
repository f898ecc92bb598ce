/**
 * `npm run bench [-- --quick] [-- --only smtp,dns] [-- --profile] [-- --ts-node] [-- --keep]`
 *
 * Runs each scenario against mailstack and its reference (Postfix, Dovecot, BIND as private
 * instances from Debian's packages on loopback ports, config and spool in a temp dir), one after
 * the other on this machine, and writes bench/results/<date>.json and <date>.md (the table is
 * also printed). See bench/README.md for what each scenario measures.
 */
import { promises as fs } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { certFiles } from "../test/helpers/cert";
import type { Ctx } from "./lib/context";
import { buildMailstack, type ServiceName, serviceAvailable } from "./lib/mailstack";
import { markdown, metOf, type Results, ratioOf } from "./lib/report";
import { exec, log, makeTempRoot, REPO, which } from "./lib/util";
import { dnsScenario } from "./scenarios/dns";
import { bigFolderScenario, imapScenario } from "./scenarios/imap";
import { memoryScenario } from "./scenarios/memory";
import { pop3Scenario } from "./scenarios/pop3";
import { relayScenario } from "./scenarios/relay";
import { smtpScenario } from "./scenarios/smtp";

interface Scenario {
  id: string;
  title: string;
  needs: ServiceName[];
  tools: string[];
  run(ctx: Ctx): Promise<void>;
}

const SCENARIOS: Scenario[] = [
  { id: "smtp", title: "SMTP durable delivery", needs: ["smtp"], tools: ["postfix", "smtp-source"], run: smtpScenario },
  { id: "relay", title: "Relay throughput", needs: ["smtp", "queue"], tools: ["postfix", "smtp-source", "smtp-sink"], run: relayScenario },
  { id: "dns", title: "DNS", needs: ["dns"], tools: ["named", "dnsperf"], run: dnsScenario },
  { id: "imap", title: "IMAP mixed sessions", needs: ["imap"], tools: ["dovecot"], run: imapScenario },
  { id: "bigfolder", title: "IMAP big folder", needs: ["imap"], tools: ["dovecot"], run: bigFolderScenario },
  { id: "pop3", title: "POP3", needs: ["pop3"], tools: ["dovecot"], run: pop3Scenario },
  { id: "memory", title: "Memory", needs: [], tools: ["postfix", "dovecot", "named"], run: memoryScenario },
];

/** Debian packages that provide the tools (scripts/setup-system installs the same list). */
const TOOL_PACKAGES: Record<string, string> = {
  postfix: "postfix",
  "smtp-source": "postfix",
  "smtp-sink": "postfix",
  dovecot: "dovecot-imapd dovecot-pop3d",
  named: "bind9",
  dnsperf: "dnsperf",
  openssl: "openssl",
  script: "bsdutils",
};

function parseArgs(argv: string[]) {
  const o = {
    quick: false,
    only: null as string[] | null,
    profile: false,
    tsNode: false,
    keep: false,
    out: path.join(REPO, "bench", "results"),
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--quick") o.quick = true;
    else if (a === "--profile") o.profile = true;
    else if (a === "--ts-node") o.tsNode = true;
    else if (a === "--keep") o.keep = true;
    else if (a === "--only") o.only = (argv[++i] ?? "").split(",").filter(Boolean);
    else if (a.startsWith("--only=")) o.only = a.slice(7).split(",").filter(Boolean);
    else if (a === "--out") o.out = path.resolve(argv[++i] ?? o.out);
    else if (a === "--help" || a === "-h") {
      process.stdout.write(
        `usage: npm run bench -- [--quick] [--only ${SCENARIOS.map((s) => s.id).join(",")}] [--profile] [--ts-node] [--keep] [--out DIR]\n`,
      );
      process.exit(0);
    } else throw new Error(`unknown option ${a}`);
  }
  return o;
}

async function pkgVersion(pkg: string): Promise<string> {
  const r = await exec("dpkg-query", ["-W", `-f=${"$"}{Version}`, pkg]).catch(() => null);
  // Debian version `1:2.3.19.1+dfsg1-2.1`: drop the epoch and the Debian parts.
  return r && r.code === 0
    ? r.stdout
        .trim()
        .replace(/^\d+:/, "")
        .replace(/[+~-].*$/, "")
    : "?";
}

/** Installs the Debian packages the references need (scripts/setup-system), when any tool is missing. */
async function ensureTools(needed: string[]): Promise<void> {
  const missing: string[] = [];
  for (const t of new Set(needed)) if (!(await which(t))) missing.push(t);
  if (missing.length === 0) return;
  log(`missing ${missing.join(", ")}: running scripts/setup-system`);
  const r = await exec("bash", [path.join(REPO, "scripts", "setup-system")], { timeoutMs: 900_000 });
  if (r.code !== 0) throw new Error(`scripts/setup-system failed: ${r.stderr.trim()}`);
  const still: string[] = [];
  for (const t of missing) if (!(await which(t))) still.push(`${t} (Debian: ${TOOL_PACKAGES[t] ?? t})`);
  if (still.length) throw new Error(`still missing after setup: ${still.join(", ")}`);
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  const started = Date.now();
  const loadStart = os.loadavg();
  const selected = SCENARIOS.filter((s) => !opts.only || opts.only.includes(s.id));
  if (selected.length === 0) throw new Error(`no scenario matches --only ${opts.only?.join(",")}`);
  if (process.getuid?.() !== 0) throw new Error("the benchmark runs private Postfix/Dovecot/BIND instances and must run as root");
  await ensureTools(["openssl", "script", ...selected.flatMap((s) => s.tools)]);

  const root = await makeTempRoot("mailstack-bench-");
  const stamp = new Date().toISOString();
  const ctx: Ctx = {
    quick: opts.quick,
    root,
    resultsDir: opts.out,
    runtime: opts.tsNode ? "ts-node" : "js",
    cert: certFiles(path.join(root, "tls")),
    rows: [],
    skipped: [],
    findings: [],
    memory: [],
    versions: {
      postfix: await pkgVersion("postfix"),
      dovecot: await pkgVersion("dovecot-core"),
      bind: await pkgVersion("bind9"),
      dnsperf: await pkgVersion("dnsperf"),
    },
    cleanups: [],
  };
  if (opts.profile) ctx.profileDir = path.join(opts.out, "profiles", stamp.slice(0, 19).replace(/:/g, "-"));
  log(`temp root ${root}${opts.quick ? " (quick)" : ""}`);

  let stopping = false;
  const cleanup = async () => {
    for (const fn of ctx.cleanups.splice(0).reverse()) await fn().catch((e) => log(`cleanup: ${(e as Error).message}`));
  };
  const onSignal = (sig: string) => {
    if (stopping) return;
    stopping = true;
    log(`${sig}: stopping every process the benchmark started`);
    void cleanup()
      .then(() => (opts.keep ? undefined : fs.rm(root, { recursive: true, force: true })))
      .finally(() => process.exit(130));
  };
  process.on("SIGINT", () => onSignal("SIGINT"));
  process.on("SIGTERM", () => onSignal("SIGTERM"));

  if (!opts.tsNode && selected.some((s) => s.needs.some(serviceAvailable) || s.id === "memory")) await buildMailstack();

  for (const s of selected) {
    const missing = s.needs.filter((n) => !serviceAvailable(n));
    if (missing.length) {
      ctx.skipped.push({
        scenario: s.title,
        reason: `mailstack ${missing.join(", ")} not present yet (${missing.map((m) => `${m}/index.ts`).join(", ")})`,
      });
      log(`skip ${s.id}: ${missing.join(", ")} not present`);
      continue;
    }
    const t0 = Date.now();
    log(`== ${s.title}`);
    try {
      await s.run(ctx);
    } catch (err) {
      const msg = (err as Error).stack ?? String(err);
      log(`scenario ${s.id} failed: ${msg}`);
      ctx.skipped.push({ scenario: s.title, reason: `failed: ${(err as Error).message.split("\n")[0]}` });
    } finally {
      await cleanup();
    }
    log(`== ${s.title} done in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  }

  const results: Results = {
    date: stamp,
    quick: opts.quick,
    runtime: opts.tsNode ? "ts-node (transpile-only)" : "compiled JavaScript (as in the container image)",
    machine: {
      cpus: os.cpus().length,
      model: os.cpus()[0]?.model ?? "?",
      memMB: Math.round(os.totalmem() / 1024 / 1024),
      kernel: os.release(),
      node: (await exec(path.join(REPO, "node_modules", ".bin", "node"), ["--version"])).stdout.trim(),
      loadavg: { start: loadStart, end: os.loadavg() },
    },
    versions: ctx.versions,
    durationSeconds: (Date.now() - started) / 1000,
    rows: ctx.rows.map((r) => ({ ...r, ratio: ratioOf(r), met: metOf(r) })),
    skipped: ctx.skipped,
    findings: ctx.findings,
  };
  const md = markdown(results);
  await fs.mkdir(opts.out, { recursive: true });
  const base = path.join(opts.out, `${stamp.slice(0, 10)}${opts.quick ? "-quick" : ""}`);
  await fs.writeFile(`${base}.json`, `${JSON.stringify({ ...results, memory: ctx.memory }, null, 2)}\n`);
  await fs.writeFile(`${base}.md`, md);
  process.stdout.write(`\n${md}\nwritten: ${path.relative(process.cwd(), base)}.json, ${path.relative(process.cwd(), base)}.md\n`);
  if (!opts.keep) await fs.rm(root, { recursive: true, force: true });
  else log(`kept ${root}`);
}

main()
  .then(() => process.exit(0))
  .catch((err) => {
    process.stderr.write(`bench: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  });
