/** The `mailstack` command as a user runs it: a real child process for every subcommand. */
import { execFile, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { promisify } from "node:util";
import { stringify } from "yaml";
import { readStackConfig, stackFile } from "../config/load";
import type { EndpointName } from "../config/schema";
import { MaildirDelivery } from "../store/deliver";
import { verifyPassword } from "../store/users";
import { listenAll } from "./helpers/stack";

const run = promisify(execFile);
const BIN = path.resolve(__dirname, "..", "bin", "mailstack");

/** A copy of the dev stack with its own data directory and ephemeral ports. */
function stackCopy(listen: Partial<Record<EndpointName, number>> = {}, sameData?: string): { file: string; dataDir: string } {
  const dir = mkdtempSync(path.join(tmpdir(), "mailstack-cli-"));
  const dataDir = sameData ?? path.join(dir, "data");
  const config = {
    ...readStackConfig(stackFile("dev")),
    "mailstack:dataDir": dataDir,
    "mailstack:listen": listenAll("127.0.0.1", listen),
  };
  const file = path.join(dir, "Pulumi.cli.yaml");
  writeFileSync(file, stringify({ config }));
  return { file, dataDir };
}

describe("mailstack CLI", () => {
  it("hash-password prints an argon2id hash of the password on stdin", async () => {
    const child = spawn(process.execPath, [BIN, "hash-password"], { stdio: ["pipe", "pipe", "pipe"] });
    child.stdin.end("s3cret-password\n");
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    const code = await new Promise((r) => child.on("close", r));
    expect(code).toBe(0);
    expect(out.trim()).toMatch(/^\$argon2id\$/);
    expect(await verifyPassword("s3cret-password", out.trim())).toBe(true);
  });

  it("check validates a stack", async () => {
    const { stdout } = await run(process.execPath, [BIN, "check", "--stack", "lx"]);
    expect(stdout).toMatch(/^ok: lx\.com \(mail\.lx\.com\), 2 users/);
  });

  it("mail lists a mailbox and prints a message, like the tutorial's mail command", async () => {
    const { file, dataDir } = stackCopy();
    await new MaildirDelivery(dataDir).deliverLocal(
      ["lx"],
      Buffer.from("From: root@lx.com\r\nSubject: to bin\r\nDate: Sat, 28 Nov 2026 08:00:00 +0000\r\n\r\nthe body\r\n"),
    );
    const list = await run(process.execPath, [BIN, "mail", "lx", "--config", file]);
    expect(list.stdout).toMatch(/lx's INBOX: 1 message\(s\)/);
    expect(list.stdout).toMatch(/N\s+1 root@lx\.com .* to bin/);
    const one = await run(process.execPath, [BIN, "mail", "lx", "1", "--config", file]);
    expect(one.stdout).toContain("Subject: to bin\nDate: Sat, 28 Nov 2026 08:00:00 +0000\n\nthe body\n");
    const alias = await run(process.execPath, [BIN, "mail", "bin", "--config", file]);
    expect(alias.stdout).toMatch(/^lx's INBOX: 1 message/);
    const ghost = await run(process.execPath, [BIN, "mail", "ghost", "--config", file]).catch((e) => e);
    expect(ghost.code).toBe(64);
    expect(ghost.stderr).toBe('mailstack: no such user "ghost" in lx.com (users: lx, lei)\n');
    expect(existsSync(path.join(dataDir, "mail", "ghost"))).toBe(false);
    const missing = await run(process.execPath, [BIN, "mail", "lx", "7", "--config", file]).catch((e) => e);
    expect(missing.code).toBe(64);
    expect(missing.stderr).toMatch(/no message 7 \(1 in lx's INBOX\)/);
  });

  it("queue list on an empty queue, and health of a service that is down", async () => {
    const { file } = stackCopy({ smtp: 1 });
    const q = await run(process.execPath, [BIN, "queue", "list", "--config", file]);
    expect(q.stdout).toBe("queue is empty\n");
    const h = await run(process.execPath, [BIN, "health", "smtp", "--config", file]).catch((e) => e);
    expect(h.code).toBe(1);
    expect(h.stderr).toMatch(/ECONNREFUSED/);
  });

  it("start runs every service, health answers for each, and Ctrl-C stops it cleanly", async () => {
    const { file, dataDir } = stackCopy();
    const child = spawn(process.execPath, [BIN, "start", "--config", file], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no listener table:\n${out}`)), 30000);
        child.stdout.on("data", () => {
          if (out.includes("Press Ctrl-C to stop.")) {
            clearTimeout(timer);
            resolve();
          }
        });
        child.on("exit", (code) => reject(new Error(`exited ${code}:\n${out}`)));
      });
      const ports = Object.fromEntries(
        [...out.matchAll(/^ {2}\w+\s+(\w+)\s+[\w+]+\s+127\.0\.0\.1:(\d+)$/gm)].map((m) => [m[1], Number(m[2])]),
      );
      expect(Object.keys(ports).sort()).toEqual(["dns", "imap", "imaps", "pop3", "pop3s", "smtp", "smtps", "submission"]);
      // Point a config at the ports that were bound (and the same data: the queue is healthy
      // when its running manager holds the spool's lock) and ask each service for its health.
      const bound = stackCopy(ports, dataDir);
      for (const svc of ["smtp", "pop3", "imap", "dns", "queue"]) {
        const { stdout } = await run(process.execPath, [BIN, "health", svc, "--config", bound.file]);
        expect(stdout).toMatch(new RegExp(`^${svc} healthy`));
      }
    } finally {
      child.kill("SIGINT");
    }
    const code = await new Promise((r) => child.on("close", (c) => r(c)));
    expect(code).toBe(0);
  });

  it("SIGHUP reloads the stack: a changed zone gets a new serial", async () => {
    const { file } = stackCopy();
    const child = spawn(process.execPath, [BIN, "serve", "dns", "--config", file], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    const waitFor = (re: RegExp) =>
      new Promise<RegExpMatchArray>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`timed out waiting for ${re}:\n${out}`)), 20000);
        const check = () => {
          const m = out.match(re);
          if (m) {
            clearTimeout(timer);
            child.stdout.off("data", check);
            resolve(m);
          }
        };
        child.stdout.on("data", check);
        check();
      });
    try {
      const port = Number((await waitFor(/"port":(\d+)/))[1]);
      const soa = async () => (await run("dig", ["+short", "-p", String(port), "@127.0.0.1", "lx.com", "SOA"])).stdout.split(" ")[2];
      const before = Number(await soa());
      const doc = readFileSync(file, "utf8").replace(
        "mailstack:dns:",
        "mailstack:dns:\n    records: [{name: extra, type: TXT, value: added-by-reload}]",
      );
      writeFileSync(file, doc.replace(/(\s+)dns: 0/, `$1dns: ${port}`));
      child.kill("SIGHUP");
      await waitFor(/"msg":"reloaded"/);
      expect(Number(await soa())).toBeGreaterThan(before);
      const txt = await run("dig", ["+short", "-p", String(port), "@127.0.0.1", "extra.lx.com", "TXT"]);
      expect(txt.stdout.trim()).toBe('"added-by-reload"');
    } finally {
      child.kill("SIGTERM");
      await new Promise((r) => child.on("close", r));
    }
  });
});
