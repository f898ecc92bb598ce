/**
 * The `mailstack` command:
 *
 *   mailstack start [--stack dev]                   every service in one process (npm start)
 *   mailstack serve <service> [--stack N|--config F] one service (what each container runs)
 *   mailstack check [--stack N|--config F]          validate a stack
 *   mailstack hash-password                         argon2id hash of a password read from stdin
 *   mailstack mail <user> [N] [--stack N]           list a mailbox, or print message N
 *   mailstack queue list|flush|delete ID [--stack N]
 *   mailstack health <service> [--stack N|--config F]
 */
import { createSocket } from "node:dgram";
import { connect } from "node:net";
import type { Logger } from "pino";
import { ConfigError } from "../config/errors";
import { loadStackIsolated } from "../config/isolated";
import type { MailConfig, ServiceName } from "../config/schema";
import { createLogger } from "../lib/log";
import type { RunningService, StartOptions, StartService } from "../lib/service";

type ServeName = ServiceName | "queue";

/** Each service module is loaded only when it runs, so one container loads one service. */
const SERVICES: Record<ServeName, () => StartService> = {
  dns: () => require("../dns").startDns,
  smtp: () => require("../smtp").startSmtp,
  pop3: () => require("../pop3").startPop3,
  imap: () => require("../imap").startImap,
  queue: () => require("../queue").startQueue,
};
/** `start` brings them up in this order (DNS first: the queue resolves through it). */
const START_ORDER: ServeName[] = ["dns", "smtp", "pop3", "imap", "queue"];

interface Args {
  positional: string[];
  stack: string;
  config?: string;
}

function parseArgs(argv: string[]): Args {
  const out: Args = { positional: [], stack: process.env.MAILSTACK_STACK ?? "dev" };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--stack" || a === "-s") out.stack = need(argv[++i], a);
    else if (a.startsWith("--stack=")) out.stack = a.slice(8);
    else if (a === "--config" || a === "-c") out.config = need(argv[++i], a);
    else if (a.startsWith("--config=")) out.config = a.slice(9);
    else out.positional.push(a);
  }
  return out;
}

function need(v: string | undefined, flag: string): string {
  if (v === undefined) throw new UsageError(`${flag} needs a value`);
  return v;
}

/** A mistake in what the user asked for (exit 64). `showUsage` adds the command summary. */
class UsageError extends Error {
  constructor(
    message: string,
    readonly showUsage = true,
  ) {
    super(message);
  }
}

/**
 * Loads and checks the stack for a long-running service: in a short-lived worker, so the schema
 * library does not stay loaded for the life of the process.
 */
function loadConfig(args: Args): Promise<MailConfig> {
  return loadStackIsolated(args.config ?? args.stack);
}

/** The same for a command that exits when done (check, mail, queue, health): no worker to start. */
function loadConfigNow(args: Args): MailConfig {
  return (require("../config/load") as typeof import("../config/load")).loadStack(args.config ?? args.stack);
}

function isServeName(s: string | undefined): s is ServeName {
  return s !== undefined && s in SERVICES;
}

async function startService(name: ServeName, config: MailConfig, log: Logger, shared: SharedParts = {}): Promise<RunningService> {
  return SERVICES[name]()(config, { log: createLogger(name, log.level), ...shared });
}

type SharedParts = Pick<StartOptions, "auth" | "store" | "quota">;

/** One user database and one mail store for every service of a single process. */
function sharedParts(config: MailConfig): SharedParts {
  const { UserDb } = require("../store/users") as typeof import("../store/users");
  const { MaildirStore } = require("../store/mailstore") as typeof import("../store/mailstore");
  const { QuotaTracker } = require("../store/quota") as typeof import("../store/quota");
  return { auth: new UserDb(config), store: new MaildirStore(config.dataDir), quota: new QuotaTracker(config.dataDir, config.users) };
}

function describe(svc: RunningService): string[] {
  return svc.listeners.map((l) => `  ${svc.name.padEnd(5)} ${l.name.padEnd(11)} ${l.protocol.padEnd(7)} ${l.address}:${l.port}`);
}

/** Runs until SIGINT/SIGTERM, then closes every service in reverse order. */
function closeOnSignal(services: RunningService[], log: Logger, after?: () => Promise<void>): void {
  let closing = false;
  const stop = async (signal: string) => {
    if (closing) return;
    closing = true;
    log.info({ signal }, "stopping");
    for (const s of [...services].reverse()) await s.close().catch((err) => log.error({ err }, "close failed"));
    await after?.().catch((err) => log.error({ err }, "flush failed"));
    process.exit(0);
  };
  process.on("SIGINT", () => void stop("SIGINT"));
  process.on("SIGTERM", () => void stop("SIGTERM"));
}

/**
 * SIGHUP re-reads the stack and hands it to every service that can reload (DNS: a changed zone
 * gets a new serial and NOTIFY goes out). A bad config is logged and the running one kept.
 */
function reloadOnHangup(services: RunningService[], args: Args, log: Logger): void {
  process.on("SIGHUP", async () => {
    let next: MailConfig;
    try {
      next = await loadConfig(args);
    } catch (err) {
      log.error({ err: (err as Error).message }, "reload refused: config invalid, keeping the running one");
      return;
    }
    for (const s of services) {
      const r = (s as RunningService & { reload?: (c: MailConfig) => Promise<unknown> }).reload;
      if (r)
        await r.call(s, next).then(
          (result) => log.info({ service: s.name, result }, "reloaded"),
          (err) => log.error({ service: s.name, err: (err as Error).message }, "reload failed"),
        );
    }
  });
}

async function cmdStart(args: Args): Promise<void> {
  const config = await loadConfig(args);
  const log = createLogger("mailstack");
  const services: RunningService[] = [];
  const shared = sharedParts(config);
  try {
    for (const name of START_ORDER) services.push(await startService(name, config, log, shared));
  } catch (err) {
    for (const s of services.reverse()) await s.close().catch(() => undefined);
    throw err;
  }
  const lines = services.flatMap(describe);
  process.stdout.write(
    `mailstack is running for ${config.domain} (stack ${args.config ?? args.stack}, data in ${config.dataDir}):\n${lines.join("\n")}\nPress Ctrl-C to stop.\n`,
  );
  closeOnSignal(services, log, () => (shared.store as import("../store/mailstore").MaildirStore).flush());
  reloadOnHangup(services, args, log);
}

async function cmdServe(args: Args): Promise<void> {
  const name = args.positional[1];
  if (!isServeName(name)) throw new UsageError(`serve needs one of: ${Object.keys(SERVICES).join(", ")}`);
  const config = await loadConfig(args);
  const log = createLogger(name);
  const svc = await startService(name, config, log);
  log.info({ listeners: svc.listeners }, "listening");
  closeOnSignal([svc], log);
  reloadOnHangup([svc], args, log);
}

async function cmdCheck(args: Args): Promise<void> {
  const config = loadConfigNow(args);
  const enabled = Object.entries(config.listen)
    .filter(([, e]) => e)
    .map(([n, e]) => `${n}=${e!.address}:${e!.port}`);
  process.stdout.write(
    `ok: ${config.domain} (${config.hostname}), ${config.users.length} users, ${Object.keys(config.aliases).length} aliases, listening ${enabled.join(" ")}\n`,
  );
}

async function readSecretLine(prompt: string): Promise<string> {
  const stdin = process.stdin;
  if (!stdin.isTTY) {
    const chunks: Buffer[] = [];
    for await (const c of stdin) chunks.push(c as Buffer);
    return Buffer.concat(chunks)
      .toString("utf8")
      .replace(/\r?\n$/, "");
  }
  process.stderr.write(prompt);
  stdin.setRawMode(true);
  return new Promise((resolve) => {
    let line = "";
    const onData = (b: Buffer) => {
      for (const ch of b.toString("utf8")) {
        if (ch === "\r" || ch === "\n") {
          stdin.setRawMode(false);
          stdin.off("data", onData);
          stdin.pause();
          process.stderr.write("\n");
          resolve(line);
          return;
        }
        if (ch === "\u0003") process.exit(130);
        if (ch === "\u007f") line = line.slice(0, -1);
        else line += ch;
      }
    };
    stdin.on("data", onData);
  });
}

async function cmdHashPassword(): Promise<void> {
  const { hashPassword } = await import("../store/users");
  const password = await readSecretLine("Password: ");
  if (password.length === 0) throw new UsageError("empty password");
  process.stdout.write(`${await hashPassword(password)}\n`);
}

async function cmdMail(args: Args): Promise<void> {
  const user = args.positional[1];
  if (!user) throw new UsageError("mail needs a user name");
  const config = loadConfigNow(args);
  // A user, `user@domain` or an alias (bin → the admin), as mail to that name would be delivered.
  const { Aliases } = require("../store/aliases") as typeof import("../store/aliases");
  const route = new Aliases(config).route(user.includes("@") ? user : `${user}@${config.domain}`);
  if (route.kind !== "local" || route.users.length !== 1)
    throw new UsageError(`no such user "${user}" in ${config.domain} (users: ${config.users.map((u) => u.name).join(", ")})`, false);
  const owner = route.users[0]!;
  const { MaildirStore } = require("../store/mailstore") as typeof import("../store/mailstore");
  const store = new MaildirStore(config.dataDir);
  const box = await store.open(owner, "INBOX");
  try {
    const msgs = box.messages();
    const n = args.positional[2];
    if (n !== undefined) {
      const info = msgs[Number(n) - 1];
      if (!info) throw new UsageError(`no message ${n} (${msgs.length} in ${owner}'s INBOX)`, false);
      process.stdout.write((await box.read(info.uid)).toString("utf8").replace(/\r\n/g, "\n"));
      return;
    }
    process.stdout.write(`${owner}'s INBOX: ${msgs.length} message(s)\n`);
    for (const [i, info] of msgs.entries()) {
      const head = (await box.read(info.uid)).subarray(0, 16384).toString("utf8");
      const header = (name: string) =>
        new RegExp(`^${name}:[ \\t]*(.*(?:\\r?\\n[ \\t].*)*)`, "im").exec(head)?.[1]?.replace(/\r?\n[ \t]+/g, " ") ?? "";
      const seen = info.flags.includes("\\Seen") ? " " : "N";
      process.stdout.write(
        `${seen} ${String(i + 1).padStart(3)} ${header("From").slice(0, 30).padEnd(30)} ${header("Date").slice(0, 31).padEnd(31)} ${String(info.size).padStart(7)}  ${header("Subject").slice(0, 40)}\n`,
      );
    }
  } finally {
    await box.close();
  }
}

async function cmdQueue(args: Args): Promise<void> {
  const config = loadConfigNow(args);
  const q = require("../queue") as {
    listQueue(c: MailConfig): Promise<Array<Record<string, unknown>>>;
    flushQueue(c: MailConfig): Promise<number>;
    deleteQueued(c: MailConfig, id: string): Promise<boolean>;
  };
  const sub = args.positional[1];
  if (sub === "list") {
    const entries = await q.listQueue(config);
    if (entries.length === 0) process.stdout.write("queue is empty\n");
    for (const e of entries) process.stdout.write(`${JSON.stringify(e)}\n`);
  } else if (sub === "flush") {
    process.stdout.write(`${await q.flushQueue(config)} message(s) due now\n`);
  } else if (sub === "delete") {
    const id = args.positional[2];
    if (!id) throw new UsageError("queue delete needs a queue id");
    if (!(await q.deleteQueued(config, id))) throw new UsageError(`no queued message ${id}`, false);
    process.stdout.write(`deleted ${id}\n`);
  } else throw new UsageError("queue needs list, flush or delete ID");
}

/** Connects to the service's first listener and checks its greeting (a DNS SOA query for dns). */
async function cmdHealth(args: Args): Promise<void> {
  const name = args.positional[1];
  if (!isServeName(name)) throw new UsageError("health needs smtp, pop3, imap, dns or queue");
  const config = loadConfigNow(args);
  if (name === "queue") {
    // The queue has no listener: healthy when a live manager holds the spool's lock (it refreshes
    // the lock every 10 s; a dead or hung one stops doing so) and the spool can be read.
    const { listQueue, queueManagerHolder } = require("../queue") as typeof import("../queue");
    const holder = await queueManagerHolder(config);
    if (!holder) throw new Error("no queue manager is running on this spool (its lock is missing or stale)");
    const n = (await listQueue(config)).length;
    process.stdout.write(`queue healthy (${n} queued, manager ${holder})\n`);
    return;
  }
  const endpointName = ({ smtp: ["smtp", "submission", "smtps"], pop3: ["pop3", "pop3s"], imap: ["imap", "imaps"], dns: ["dns"] } as const)[
    name
  ].find((e) => config.listen[e] !== null);
  const ep = endpointName ? config.listen[endpointName] : null;
  if (!ep) throw new UsageError(`${name} has no listener configured`);
  const host = ep.address === "0.0.0.0" ? "127.0.0.1" : ep.address === "::" ? "::1" : ep.address;
  if (name === "dns") return dnsHealth(host, ep.port, config.domain);
  if (endpointName === "smtps" || endpointName === "pop3s" || endpointName === "imaps")
    throw new UsageError(`${name} has only a TLS listener; health checks the plaintext one`);
  const expect = { smtp: /^220 /, pop3: /^\+OK/, imap: /^\* OK/ }[name];
  await new Promise<void>((resolve, reject) => {
    const sock = connect({ host, port: ep.port });
    const timer = setTimeout(() => reject(new Error("timed out")), 5000);
    sock.once("data", (d) => {
      clearTimeout(timer);
      const line = d.toString("utf8");
      sock.end(name === "smtp" ? "QUIT\r\n" : name === "pop3" ? "QUIT\r\n" : "a LOGOUT\r\n");
      if (expect.test(line)) resolve();
      else reject(new Error(`unexpected greeting: ${line.trim()}`));
    });
    sock.once("error", reject);
  });
  process.stdout.write(`${name} healthy\n`);
}

async function dnsHealth(host: string, port: number, domain: string): Promise<void> {
  const packet = require("dns-packet") as typeof import("dns-packet");
  const sock = createSocket(host.includes(":") ? "udp6" : "udp4");
  const query = packet.encode({ type: "query", id: 4242, flags: 0, questions: [{ type: "SOA", name: domain }] });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      sock.close();
      reject(new Error("timed out"));
    }, 5000);
    sock.once("message", (msg) => {
      clearTimeout(timer);
      sock.close();
      const res = packet.decode(msg) as ReturnType<typeof packet.decode> & { rcode?: string };
      if (res.rcode === "NOERROR" && (res.answers ?? []).some((a) => a.type === "SOA")) resolve();
      else reject(new Error(`bad answer: ${res.rcode}`));
    });
    sock.send(query, port, host);
  });
  process.stdout.write("dns healthy\n");
}

const USAGE = `usage: mailstack <command> [--stack NAME | --config FILE]
  start                      run every service of the stack (default stack: dev)
  serve <dns|smtp|pop3|imap|queue>
                             run one service
  check                      validate the stack config
  hash-password              read a password on stdin, print its argon2id hash
  mail <user> [N]            list a user's INBOX, or print message N
  queue list|flush|delete ID inspect the outbound queue
  health <dns|smtp|pop3|imap|queue>
                             check that a service answers
`;

export async function main(argv: string[]): Promise<void> {
  // `mailstack mail lx | head` closes our stdout early: that is not an error.
  process.stdout.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code === "EPIPE") process.exit(0);
    throw err;
  });
  try {
    const args = parseArgs(argv);
    switch (args.positional[0]) {
      case "start":
        return await cmdStart(args);
      case "serve":
        return await cmdServe(args);
      case "check":
        return await cmdCheck(args);
      case "hash-password":
        return await cmdHashPassword();
      case "mail":
        return await cmdMail(args);
      case "queue":
        return await cmdQueue(args);
      case "health":
        return await cmdHealth(args);
      case undefined:
      case "help":
      case "--help":
        process.stdout.write(USAGE);
        return;
      default:
        throw new UsageError(`unknown command "${args.positional[0]}"`);
    }
  } catch (err) {
    if (err instanceof ConfigError) process.stderr.write(`mailstack: ${err.message}\n`);
    else if (err instanceof UsageError) process.stderr.write(`mailstack: ${err.message}\n${err.showUsage ? `\n${USAGE}` : ""}`);
    else process.stderr.write(`mailstack: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(err instanceof ConfigError ? 78 : err instanceof UsageError ? 64 : 1);
  }
}

if (require.main === module) void main(process.argv.slice(2));
