/**
 * The tutorial's two-domain example exactly as shipped: stacks/Pulumi.sina.yaml and
 * stacks/Pulumi.sohu.yaml run side by side with `mailstack start` (two processes), on 127.0.0.2
 * and 127.0.0.3 with the standard ports (25, 587, 110, 143, 53, ...). Only dataDir is changed, to
 * a temporary directory. Needs root for the ports below 1024.
 *
 * lisi submits to sina over submission (STARTTLS + AUTH); sina's queue asks sina's DNS for the MX
 * of sohu.com, which sina's DNS forwards to sohu's DNS; sohu accepts the mail; wangwu reads it over
 * POP3 (STLS) and IMAP (STARTTLS) with Python's poplib and imaplib.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { promisify } from "node:util";
import nodemailer from "nodemailer";
import { stringify } from "yaml";
import { readStackConfig, stackFile } from "../config/load";

const run = promisify(execFile);
const BIN = path.resolve(__dirname, "..", "bin", "mailstack");
const children: ChildProcess[] = [];

/** Starts a shipped stack with its data in a temporary directory; resolves once it listens. */
async function startShipped(name: "sina" | "sohu"): Promise<{ file: string; out: () => string }> {
  const dir = mkdtempSync(path.join(tmpdir(), `mailstack-stack-${name}-`));
  const file = path.join(dir, `Pulumi.${name}.yaml`);
  const config: Record<string, unknown> = { ...readStackConfig(stackFile(name)), "mailstack:dataDir": path.join(dir, "data") };
  // Retries in seconds rather than minutes, so "sohu down for a while" fits in a test.
  config["mailstack:queue"] = { minBackoff: 1, maxBackoff: 2, scanInterval: 0.5 };
  writeFileSync(file, stringify({ config }));
  const child = spawn(process.execPath, [BIN, "start", "--config", file], { stdio: ["ignore", "pipe", "pipe"] });
  children.push(child);
  let out = "";
  child.stdout!.on("data", (d) => (out += d));
  child.stderr!.on("data", (d) => (out += d));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not start:\n${out}`)), 30000);
    const check = () => {
      if (out.includes("Press Ctrl-C to stop.")) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout!.on("data", check);
    child.on("exit", (code) => reject(new Error(`${name} exited ${code}:\n${out}`)));
  });
  return { file, out: () => out };
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  child.kill("SIGINT");
  await new Promise((r) => child.on("close", r));
}

/** Python's poplib from 127.0.0.1 (not trusted by sohu): STLS first, then USER/PASS, RETR all. */
async function popAll(host: string, user: string, password: string): Promise<string[]> {
  const script = `
import poplib, ssl, json, sys
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
p = poplib.POP3(sys.argv[1], 110, timeout=10); p.stls(ctx); p.user(sys.argv[2]); p.pass_(sys.argv[3])
out = [b"\\r\\n".join(p.retr(i + 1)[1]).decode("utf-8", "replace") for i in range(p.stat()[0])]
p.quit(); print(json.dumps(out))`;
  const { stdout } = await run("python3", ["-c", script, host, user, password]);
  return JSON.parse(stdout) as string[];
}

async function imapSubjects(host: string, user: string, password: string): Promise<string[]> {
  const script = `
import imaplib, ssl, json, sys
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
m = imaplib.IMAP4(sys.argv[1], 143); m.starttls(ctx); m.login(sys.argv[2], sys.argv[3]); m.select("INBOX", readonly=True)
typ, data = m.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
print(json.dumps([d[1].decode().strip() for d in data if isinstance(d, tuple)])); m.logout()`;
  const { stdout } = await run("python3", ["-c", script, host, user, password]);
  return JSON.parse(stdout) as string[];
}

async function eventually<T>(what: string, f: () => Promise<T | undefined>, ms = 30000): Promise<T> {
  const end = Date.now() + ms;
  let last: unknown;
  while (Date.now() < end) {
    try {
      const v = await f();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out waiting for ${what}: ${last}`);
}

const submit = (from: string, password: string, host: string, to: string, subject: string) =>
  nodemailer
    .createTransport({
      host,
      port: 587,
      secure: false,
      requireTLS: true,
      tls: { rejectUnauthorized: false },
      auth: { user: from, pass: password },
    })
    .sendMail({ from: `${from}@${host === "127.0.0.2" ? "sina.com" : "sohu.com"}`, to, subject, text: `${subject}\n` });

const isRoot = process.getuid?.() === 0;
(isRoot ? describe : describe.skip)("the shipped sina and sohu stacks on the standard ports", () => {
  let sinaFile: string;
  let sohuFile: string;
  afterAll(async () => {
    for (const c of children) await stop(c);
  });

  it("lisi@sina.com → MX lookup → sohu → wangwu over POP3 and IMAP", async () => {
    sinaFile = (await startShipped("sina")).file;
    sohuFile = (await startShipped("sohu")).file;
    const { stdout: mx } = await run("dig", ["+short", "@127.0.0.2", "-b", "127.0.0.2", "sohu.com", "MX"]);
    expect(mx.trim()).toBe("10 mail.sohu.com.");
    const info = await submit("lisi", "lisi-password", "127.0.0.2", "wangwu@sohu.com", "hello wangwu");
    expect(info.accepted).toEqual(["wangwu@sohu.com"]);
    const popped = await eventually("wangwu's mail over POP3", async () => {
      const msgs = await popAll("127.0.0.3", "wangwu", "wangwu-password");
      return msgs.find((m) => m.includes("Subject: hello wangwu"));
    });
    expect(popped).toMatch(/^Return-Path: <lisi@sina\.com>/);
    expect(popped).toMatch(/Received: from mail\.sina\.com/);
    expect(await imapSubjects("127.0.0.3", "wangwu", "wangwu-password")).toContain("Subject: hello wangwu");
  });

  it("the reply goes back the other way", async () => {
    await submit("wangwu", "wangwu-password", "127.0.0.3", "lisi@sina.com", "re: hello wangwu");
    await eventually("lisi's reply", async () =>
      (await popAll("127.0.0.2", "lisi", "lisi-password")).find((m) => m.includes("Subject: re: hello wangwu")),
    );
  });

  it("mail to a nonexistent sohu user bounces back to lisi as a DSN", async () => {
    await submit("lisi", "lisi-password", "127.0.0.2", "ghost@sohu.com", "to nobody");
    const dsn = await eventually("the bounce", async () =>
      (await popAll("127.0.0.2", "lisi", "lisi-password")).find((m) => m.includes("multipart/report")),
    );
    expect(dsn).toMatch(/From: .*MAILER-DAEMON@mail\.sina\.com/i);
    expect(dsn).toMatch(/Final-Recipient: rfc822; ?ghost@sohu\.com/i);
    expect(dsn).toMatch(/Status: 5\.1\.1/);
  });

  it("sohu down for a while: the mail waits in sina's queue and arrives when sohu is back", async () => {
    await stop(children[1]!);
    await submit("lisi", "lisi-password", "127.0.0.2", "wangwu@sohu.com", "while you were down");
    const queued = await eventually("a deferred entry in sina's queue", async () => {
      const { stdout } = await run(process.execPath, [BIN, "queue", "list", "--config", sinaFile]);
      return stdout.includes("wangwu@sohu.com") && /defer|attempt|4\.\d\.\d/i.test(stdout) ? stdout : undefined;
    });
    expect(queued).toContain("wangwu@sohu.com");
    // Bring sohu back with the same data directory.
    const child = spawn(process.execPath, [BIN, "start", "--config", sohuFile], { stdio: ["ignore", "pipe", "pipe"] });
    children.push(child);
    await eventually("the queued mail", async () =>
      (await popAll("127.0.0.3", "wangwu", "wangwu-password")).find((m) => m.includes("Subject: while you were down")),
    );
    await eventually("an empty queue", async () => {
      const { stdout } = await run(process.execPath, [BIN, "queue", "list", "--config", sinaFile]);
      return stdout === "queue is empty\n" ? true : undefined;
    });
  });
});
