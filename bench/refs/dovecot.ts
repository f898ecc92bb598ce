/**
 * A private Dovecot instance (Debian's dovecot-imapd and dovecot-pop3d) for the benchmark:
 * `dovecot -c FILE` with base_dir, state and log in a temp dir, IMAP and POP3 on loopback ports,
 * no TLS, plaintext logins from 127.0.0.0/8 (the seed's settings), users from a passwd-file with
 * the same argon2id hashes mailstack uses, Maildirs under `mailDir/<user>/` (the same layout
 * mailstack uses: the user's directory is the INBOX). Everything else is as shipped.
 */
import { spawn } from "node:child_process";
import { closeSync, promises as fs, openSync } from "node:fs";
import * as path from "node:path";
import { ImapClient } from "../../test/helpers/imap-client";
import { type Ctx, onCleanup } from "../lib/context";
import { type Mem, MemSampler, memOf } from "../lib/procmem";
import { freePort, sleep, waitForPort } from "../lib/util";
import { MasterDaemon } from "./daemon";

export interface DovecotOptions {
  root: string;
  mailDir: string;
  imapPort: number;
  pop3Port: number;
  users: Array<{ name: string; hash: string }>;
  /** The unprivileged uid/gid mail is accessed as (Dovecot refuses root). */
  uid: number;
  gid: number;
}

export class DovecotInstance extends MasterDaemon {
  readonly confFile: string;
  readonly logFile: string;
  readonly baseDir: string;

  constructor(readonly o: DovecotOptions) {
    super(path.join(o.root, "run", "master.pid"), "dovecot");
    this.confFile = path.join(o.root, "dovecot.conf");
    this.logFile = path.join(o.root, "dovecot.log");
    this.baseDir = path.join(o.root, "run");
  }

  config(): string {
    const o = this.o;
    return `# mailstack benchmark: private Dovecot instance (generated)
base_dir = ${this.baseDir}
state_dir = ${path.join(o.root, "state")}
log_path = ${this.logFile}
info_log_path = ${this.logFile}
protocols = imap pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
login_trusted_networks = 127.0.0.0/8
auth_mechanisms = plain login
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = ${Math.min(o.uid, 1000)}
mail_location = maildir:~
# Ten load clients log in from one address; the shipped limit is 10 per user and address.
mail_max_userip_connections = 1000
passdb {
  driver = passwd-file
  args = ${path.join(o.root, "passwd")}
}
userdb {
  driver = passwd-file
  args = ${path.join(o.root, "passwd")}
}
${loginService("imap", o.imapPort)}
${loginService("pop3", o.pop3Port)}
protocol imap {
  mail_plugins =
}
`;
  }

  async start(): Promise<void> {
    await fs.mkdir(this.baseDir, { recursive: true });
    await fs.mkdir(this.o.mailDir, { recursive: true });
    await fs.chown(this.o.mailDir, this.o.uid, this.o.gid);
    const passwd = this.o.users
      .map((u) => `${u.name}:{ARGON2ID}${u.hash}:${this.o.uid}:${this.o.gid}::${path.join(this.o.mailDir, u.name)}`)
      .join("\n");
    // Read by Dovecot's auth process (user dovecot); hashes only, in a private temp dir.
    await fs.writeFile(path.join(this.o.root, "passwd"), `${passwd}\n`, { mode: 0o644 });
    await fs.writeFile(this.confFile, this.config());
    // dovecot forks its master and exits; the master must not hold our pipes (it would keep
    // them open for its whole life), so its output goes to a file.
    const out = path.join(this.o.root, "dovecot.start.out");
    const fd = openSync(out, "w");
    const child = spawn("dovecot", ["-c", this.confFile], { stdio: ["ignore", fd, fd] });
    closeSync(fd);
    const code = await new Promise<number | null>((resolve, reject) => {
      child.once("error", reject);
      child.once("exit", (c) => resolve(c));
    });
    if (code !== 0) throw new Error(`dovecot failed to start (${code}): ${(await fs.readFile(out, "utf8")).trim()}`);
    await waitForPort(this.o.imapPort);
    await waitForPort(this.o.pop3Port);
    // Fail fast, with Dovecot's own words, if logins do not work.
    const u = this.o.users[0];
    if (u && "password" in u) {
      const c = await ImapClient.connect(this.o.imapPort);
      c.timeoutMs = 20_000;
      try {
        const r = await c.login(u.name, (u as { password: string }).password);
        if (r.status !== "OK")
          throw new Error(
            `dovecot login check failed (${r.text}): ${(await fs.readFile(this.logFile, "utf8").catch(() => "")).slice(-1500)}`,
          );
      } finally {
        await c.logout();
      }
    }
  }
}

/** A login service listening on 127.0.0.1:`port` in plaintext; its implicit-TLS listener off. */
function loginService(protocol: "imap" | "pop3", port: number): string {
  return `service ${protocol}-login {
  inet_listener ${protocol} {
    address = 127.0.0.1
    port = ${port}
  }
  inet_listener ${protocol}s {
    port = 0
  }
}`;
}

/** A Dovecot started for a scenario: stopped with the context, its processes' memory sampled. */
export interface SampledDovecot {
  dv: DovecotInstance;
  /** Memory of its processes once started and settled. */
  idle: Mem;
  /** Stops sampling; returns the peak. */
  stopSampling(): Mem;
}

/**
 * Starts Dovecot on free loopback ports over `mailDir`, waits `settleMs`, then samples the
 * memory of its process tree every `sampleMs` (the tree re-read every `refreshMs`).
 */
export async function startSampledDovecot(
  ctx: Ctx,
  o: Omit<DovecotOptions, "imapPort" | "pop3Port">,
  timing: { settleMs: number; sampleMs: number; refreshMs: number },
): Promise<SampledDovecot> {
  const dv = new DovecotInstance({ ...o, imapPort: await freePort(), pop3Port: await freePort() });
  onCleanup(ctx, () => dv.stop());
  await dv.start();
  await sleep(timing.settleMs);
  let pids = await dv.pids();
  const idle = memOf(pids);
  const sampler = new MemSampler(() => pids, timing.sampleMs).start();
  const refresh = setInterval(async () => (pids = await dv.pids()), timing.refreshMs);
  return {
    dv,
    idle,
    stopSampling: () => {
      clearInterval(refresh);
      return sampler.stop();
    },
  };
}
