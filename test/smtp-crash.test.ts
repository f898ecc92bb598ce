/**
 * Nothing lost: the SMTP server in its own process is killed with SIGKILL in the middle of a
 * burst of 1000 messages, at a random point, twice; after each restart every message that got
 * 250 is in exactly one Maildir and complete, and nothing half-written is visible. Also: an
 * fsync that fails (strace fault injection) and a queue that fails after local delivery give
 * 451 and leave nothing visible.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { promises as fs } from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { silentLogger } from "../lib/log";
import { TemporaryFailure } from "../store/types";
import { inbox, message, queued, RawClient, sendRaw, startTestSmtp, testConfig, tmpDir } from "./helpers/smtp";

const REPO = path.resolve(__dirname, "..");
const NODE = path.join(REPO, "node_modules/.bin/node");
const CHILD = path.join(REPO, "test/helpers/smtp-child.ts");

interface Child {
  proc: ChildProcess;
  port: number;
  pid: number;
}

/** Starts the server process (optionally under a wrapper such as strace) and waits for its port. */
function startChild(dataDir: string, wrapper: string[] = []): Promise<Child> {
  const argv = [NODE, "-r", "ts-node/register/transpile-only", CHILD, dataDir];
  const [cmd, ...args] = [...wrapper, ...argv] as [string, ...string[]];
  const proc = spawn(cmd, args, { cwd: REPO, stdio: ["ignore", "pipe", "pipe"] });
  return new Promise((resolve, reject) => {
    let out = "";
    let err = "";
    proc.stdout!.on("data", (d) => {
      out += d;
      const nl = out.indexOf("\n");
      if (nl >= 0) {
        const { port, pid } = JSON.parse(out.slice(0, nl)) as { port: number; pid: number };
        resolve({ proc, port, pid });
      }
    });
    proc.stderr!.on("data", (d) => {
      err += d;
    });
    proc.once("exit", (code) => reject(new Error(`server exited (${code}) before listening: ${err}`)));
  });
}

function killed(c: Child): Promise<void> {
  return new Promise((resolve) => {
    if (c.proc.exitCode !== null || c.proc.signalCode !== null) return resolve();
    c.proc.once("exit", () => resolve());
  });
}

const FILLER = Array.from({ length: 16 }, (_, i) => `line ${i} ${"abcdefghij".repeat(6)}`).join("\r\n");
const body = (n: number) =>
  `From: burst@example.org\r\nSubject: crash-${n}\r\nMessage-ID: <crash-${n}@test.example>\r\n\r\n${FILLER}\r\nEND crash-${n}\r\n`;
const userOf = (n: number) => (n % 2 === 0 ? "lx" : "lei");

/**
 * One message per connection, as smtp-source sends them: greeting, then EHLO/MAIL/RCPT/DATA
 * pipelined, the message, and QUIT. Resolves true when the server answered 250 to the data.
 */
function sendOne(port: number, n: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: "127.0.0.1" });
    let buf = "";
    let stage = 0;
    let done = false;
    const finish = (ok: boolean) => {
      if (done) return;
      done = true;
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(10_000, () => finish(false));
    s.on("error", () => finish(false));
    s.on("close", () => finish(false));
    s.on("data", (d) => {
      buf += d.toString("latin1");
      for (;;) {
        const m = /^(?:\d{3}-[^\n]*\n)*(\d{3}) [^\n]*\n/.exec(buf);
        if (!m) return;
        buf = buf.slice(m[0].length);
        const code = Number(m[1]);
        stage++;
        if (stage === 1) {
          if (code !== 220) return finish(false);
          s.write(`EHLO burst.example\r\nMAIL FROM:<burst@example.org>\r\nRCPT TO:<${userOf(n)}@lx.com>\r\nDATA\r\n`);
        } else if (stage === 5) {
          if (code !== 354) return finish(false);
          s.write(`${body(n)}.\r\n`);
        } else if (stage === 6) {
          if (code === 250) {
            s.write("QUIT\r\n");
            done = true;
            s.end();
            return resolve(true);
          }
          return finish(false);
        } else if (code >= 400) return finish(false);
      }
    });
  });
}

/** Sends messages first..first+count-1 with `parallel` sessions; calls onAck after each 250. */
async function burst(port: number, first: number, count: number, parallel: number, onAck: (n: number) => void) {
  let next = first;
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (next < first + count) {
        const n = next++;
        if (await sendOne(port, n)) onAck(n);
      }
    }),
  );
}

/** Every visible message: its number, owner, and whether it is complete. */
async function visible(dataDir: string) {
  const out: Array<{ n: number; user: string; complete: boolean; file: string }> = [];
  for (const user of ["lx", "lei"]) {
    for (const m of await inbox(dataDir, user)) {
      const id = /Message-ID: <crash-(\d+)@test\.example>/.exec(m.data);
      const n = id ? Number(id[1]) : -1;
      out.push({
        n,
        user,
        complete: n >= 0 && m.data.endsWith(body(n)) && /^Return-Path: <burst@example\.org>\r\nReceived: /.test(m.data),
        file: m.file,
      });
    }
  }
  return out;
}

test("kill -9 mid-burst: every message that got 250 is in exactly one Maildir, complete; nothing half-written is visible", async () => {
  const dataDir = tmpDir("mailstack-crash-");
  const acked = new Set<number>();
  const rates: string[] = [];
  for (let round = 0; round < 2; round++) {
    const child = await startChild(dataDir);
    const first = round * 1000;
    // A random point in the burst, away from its ends so the kill lands among live sessions.
    const killAfter = 100 + Math.floor(Math.random() * 600);
    let ackedThisRound = 0;
    const t0 = Date.now();
    let killedAt = 0;
    const sending = burst(child.port, first, 1000, 20, (n) => {
      acked.add(n);
      ackedThisRound++;
      if (ackedThisRound === killAfter) {
        killedAt = Date.now();
        process.kill(child.pid, "SIGKILL");
      }
    });
    await sending;
    // (Should the server have acknowledged fewer messages than that, stop it anyway and fail.)
    if (killedAt === 0) process.kill(child.pid, "SIGKILL");
    await killed(child);
    expect(killedAt).toBeGreaterThan(0);
    expect(child.proc.signalCode).toBe("SIGKILL");
    rates.push(
      `round ${round + 1}: ${ackedThisRound} acked, ${Math.round((killAfter * 1000) / Math.max(1, killedAt - t0))} msg/s before the kill`,
    );

    // Restart on the same data: it must come up cleanly and take mail again.
    const again = await startChild(dataDir);
    const c = await RawClient.connect(again.port);
    await c.hello();
    expect((await sendRaw(c, "burst@example.org", [`${userOf(99_000 + round)}@lx.com`], body(99_000 + round))).code).toBe(250);
    acked.add(99_000 + round);
    c.destroy();
    process.kill(again.pid, "SIGKILL");
    await killed(again);

    const files = await visible(dataDir);
    // Nothing visible is partial or foreign.
    expect(files.filter((f) => !f.complete)).toEqual([]);
    const seen = new Map<number, number>();
    for (const f of files) {
      expect(f.user).toBe(userOf(f.n));
      seen.set(f.n, (seen.get(f.n) ?? 0) + 1);
    }
    // Every acknowledged message is there exactly once; none is there twice.
    const missing = [...acked].filter((n) => seen.get(n) !== 1);
    expect(missing).toEqual([]);
    expect([...seen.values()].every((v) => v === 1)).toBe(true);
    expect(killAfter).toBeLessThan(1000);
    expect(ackedThisRound).toBeGreaterThanOrEqual(killAfter);
  }
  // tmp/ may keep leftovers of the killed writes; they are never visible to readers.
  await fs.rm(dataDir, { recursive: true, force: true });
  console.log(`SMTP crash burst (20 sessions, 1 message per connection, 1 KiB):\n  ${rates.join("\n  ")}`);
});

describe("faults injected", () => {
  it("an fsync that fails (strace inject=fsync:error=EIO) gives 451 and nothing in new/", async () => {
    const dataDir = tmpDir("mailstack-eio-");
    const child = await startChild(dataDir, [
      "strace",
      "-f",
      "-qq",
      "-o",
      "/dev/null",
      "-e",
      "trace=fsync,fdatasync",
      "-e",
      "inject=fsync,fdatasync:error=EIO",
    ]);
    try {
      const c = await RawClient.connect(child.port);
      await c.hello();
      const r = await sendRaw(c, "a@example.org", ["lx@lx.com"], message("eio"));
      expect(r.lines[0]).toBe("451 4.3.0 Error: temporary failure storing the message, try again later");
      // The session goes on; a relayed message fails the same way.
      const r2 = await sendRaw(c, "a@example.org", ["wangwu@sohu.com"], message("eio-relay"));
      expect(r2.code).toBe(451);
      c.destroy();
      expect(await inbox(dataDir, "lx")).toEqual([]);
      expect(await queued(dataDir)).toEqual([]);
    } finally {
      process.kill(child.pid, "SIGKILL");
      await killed(child);
    }
  });

  it("a queue failure after local delivery takes the local copies back: 451, nothing half-delivered", async () => {
    const server = await startTestSmtp(testConfig(), {
      log: silentLogger,
      spool: { enqueueAs: () => Promise.reject(new TemporaryFailure("queue disk full", "ENOSPC")) },
    });
    try {
      const c = await RawClient.connect(server.port("smtp"));
      await c.hello();
      const r = await sendRaw(c, "a@example.org", ["lx@lx.com", "lei@lx.com", "wangwu@sohu.com"], message("half"));
      expect(r.code).toBe(451);
      // Local-only mail still flows.
      expect((await sendRaw(c, "a@example.org", ["lx@lx.com"], message("whole"))).code).toBe(250);
      c.destroy();
      expect((await inbox(server.config.dataDir, "lx")).map((m) => m.data.includes("half"))).toEqual([false]);
      expect(await inbox(server.config.dataDir, "lei")).toEqual([]);
    } finally {
      await server.close();
    }
  });

  it("a delivery failure gives 451 4.3.0 and the session carries on", async () => {
    let fail = true;
    const server = await startTestSmtp(testConfig(), {
      log: silentLogger,
      delivery: {
        deliverLocal: async () => {
          if (fail) throw new TemporaryFailure("EIO", "EIO");
          return [];
        },
      },
    });
    try {
      const c = await RawClient.connect(server.port("smtp"));
      await c.hello();
      expect((await sendRaw(c, "a@example.org", ["lx@lx.com"], message("f1"))).code).toBe(451);
      fail = false;
      expect((await sendRaw(c, "a@example.org", ["lx@lx.com"], message("f2"))).code).toBe(250);
      c.destroy();
    } finally {
      await server.close();
    }
  });
});
