/**
 * A private Postfix instance (Debian's postfix package) for the benchmark: `postfix -c DIR` with
 * its own main.cf and master.cf, queue and data directories in a temp dir, listening on one
 * unprivileged loopback port. Never the system instance (no /etc/postfix is read or written).
 *
 * Two roles:
 *  - "deliver": virtual(8) delivery of lx.com into Maildirs under `mailDir` (fsync as shipped);
 *  - "relay":   everything from 127.0.0.0/8 relayed to `relayhost` (smtp-sink), optionally held
 *               in the hold queue on arrival so that delivery can be timed on its own.
 *
 * Settings that differ from a stock main.cf are only those a private loopback instance needs:
 * no DNS (peer name lookups off, no MX lookups), no syslog (maillog_file), no chroot.
 */
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { privateMasterCf } from "../../test/helpers/postfix";
import { exec, run, waitForPort } from "../lib/util";
import { MasterDaemon } from "./daemon";

export interface PostfixOptions {
  root: string;
  port: number;
  role: "deliver" | "relay";
  /** deliver: Maildirs go to `<mailDir>/<user>/` (files owned by uid/gid). */
  mailDir?: string;
  uid?: number;
  gid?: number;
  /** deliver: local parts of lx.com that have a Maildir (default: lx). */
  users?: string[];
  /** relay: `host:port` of the next hop. */
  relayhost?: string;
  /** relay: put every accepted message on hold (released with `release()`). */
  hold?: boolean;
}

export class PostfixInstance extends MasterDaemon {
  readonly confDir: string;
  readonly queueDir: string;
  readonly logFile: string;

  constructor(readonly o: PostfixOptions) {
    super(path.join(o.root, "spool", "pid", "master.pid"), "postfix");
    this.confDir = path.join(o.root, "etc");
    this.queueDir = path.join(o.root, "spool");
    this.logFile = path.join(o.root, "maillog");
  }

  mainCf(): string {
    const o = this.o;
    const lines = [
      "# mailstack benchmark: private Postfix instance (generated)",
      "compatibility_level = 3.6",
      `queue_directory = ${this.queueDir}`,
      `data_directory = ${path.join(o.root, "data")}`,
      "mail_owner = postfix",
      "setgid_group = postdrop",
      "inet_interfaces = 127.0.0.1",
      "inet_protocols = ipv4",
      "myhostname = mail.lx.com",
      "mydomain = lx.com",
      "mydestination =",
      "mynetworks = 127.0.0.0/8",
      `maillog_file = ${this.logFile}`,
      `maillog_file_prefixes = ${o.root}`,
      // No DNS at all: the benchmark never touches the machine's resolver.
      "smtpd_peername_lookup = no",
      "disable_dns_lookups = yes",
      "smtp_dns_support_level = disabled",
      "smtp_host_lookup = native",
      "alias_maps =",
      "alias_database =",
      "local_recipient_maps =",
      "biff = no",
      "smtputf8_enable = no",
      "smtpd_banner = $myhostname ESMTP",
    ];
    if (o.role === "deliver") {
      lines.push(
        "virtual_mailbox_domains = lx.com",
        `virtual_mailbox_base = ${o.mailDir}`,
        // `user/` (trailing slash) is Maildir format; every user gets their own directory.
        `virtual_mailbox_maps = texthash:${path.join(this.confDir, "vmailbox")}`,
        `virtual_uid_maps = static:${o.uid ?? 65534}`,
        `virtual_gid_maps = static:${o.gid ?? 65534}`,
        "virtual_minimum_uid = 100",
        // Nothing leaves this instance (bounces to the benchmark's sender included).
        "default_transport = error:outbound mail is off in this benchmark instance",
        "relay_transport = error:outbound mail is off in this benchmark instance",
      );
    } else {
      lines.push(`relayhost = [${o.relayhost!.split(":")[0]}]:${o.relayhost!.split(":")[1]}`, "relay_domains =");
      if (o.hold) lines.push("smtpd_end_of_data_restrictions = check_client_access static:HOLD");
    }
    return `${lines.join("\n")}\n`;
  }

  /** Debian's master.cf (this machine's, or Debian 12's) with the smtp listener on our port and chroot off everywhere. */
  async masterCf(): Promise<string> {
    const stock = await fs.readFile("/etc/postfix/master.cf", "utf8").catch(() => undefined);
    return privateMasterCf(`127.0.0.1:${this.o.port}`, stock);
  }

  async start(): Promise<void> {
    await fs.mkdir(this.confDir, { recursive: true });
    await fs.mkdir(this.queueDir, { recursive: true, mode: 0o755 });
    await fs.mkdir(path.join(this.o.root, "data"), { recursive: true });
    await fs.chown(path.join(this.o.root, "data"), await uidOf("postfix"), 0);
    if (this.o.mailDir) {
      await fs.mkdir(this.o.mailDir, { recursive: true });
      await fs.chown(this.o.mailDir, this.o.uid ?? 65534, this.o.gid ?? 65534);
    }
    await fs.writeFile(path.join(this.confDir, "main.cf"), this.mainCf());
    await fs.writeFile(path.join(this.confDir, "master.cf"), await this.masterCf());
    await fs.writeFile(path.join(this.confDir, "vmailbox"), (this.o.users ?? ["lx"]).map((u) => `${u}@lx.com ${u}/\n`).join(""));
    // postfix(1) writes its complaints to syslog unless stderr is a terminal; `script` gives it one.
    const r = await exec("script", ["-qec", `postfix -c ${this.confDir} start`, "/dev/null"], { timeoutMs: 60_000 });
    if (r.code !== 0) throw new Error(`postfix start failed: ${(r.stdout + r.stderr).trim()}`);
    await waitForPort(this.o.port);
  }

  /** Releases held mail and asks the queue manager to deliver it now. */
  async release(): Promise<void> {
    await run("postsuper", ["-c", this.confDir, "-H", "ALL"]);
    await run("postqueue", ["-c", this.confDir, "-f"]);
  }

  /** Number of messages in the hold queue (relay role). */
  async heldCount(): Promise<number> {
    return countFiles(path.join(this.queueDir, "hold"));
  }

  /** Messages anywhere in the queue (incoming, active, deferred, hold). */
  async queuedCount(): Promise<number> {
    let n = 0;
    for (const q of ["incoming", "active", "deferred", "hold", "maildrop"]) n += await countFiles(path.join(this.queueDir, q));
    return n;
  }
}

async function countFiles(dir: string): Promise<number> {
  let n = 0;
  let entries: import("node:fs").Dirent[];
  try {
    entries = await fs.readdir(dir, { withFileTypes: true });
  } catch {
    return 0;
  }
  for (const e of entries) n += e.isDirectory() ? await countFiles(path.join(dir, e.name)) : 1;
  return n;
}

export async function uidOf(user: string): Promise<number> {
  const passwd = await fs.readFile("/etc/passwd", "utf8");
  const line = passwd.split("\n").find((l) => l.startsWith(`${user}:`));
  if (!line) throw new Error(`no user ${user} in /etc/passwd (is the Debian package installed?)`);
  return Number(line.split(":")[2]);
}

export async function gidOf(user: string): Promise<number> {
  const passwd = await fs.readFile("/etc/passwd", "utf8");
  const line = passwd.split("\n").find((l) => l.startsWith(`${user}:`));
  if (!line) throw new Error(`no user ${user} in /etc/passwd`);
  return Number(line.split(":")[3]);
}
