/**
 * Fault test (issue 6): the queue manager is killed with SIGKILL at random points while it
 * delivers a burst, then restarted, several times. Afterwards every message reached its
 * recipient at least once, every bounce was generated exactly once (at most once, never lost),
 * and the queue is empty.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { listIds, queuePaths, Spool } from "../queue/spool";
import { inbox, queueConfig, type Sink, startOwnDns, startRemoteDns, startSink, type TestDns, tempDir, waitFor } from "./queue-fixtures";

const ROOT = path.resolve(__dirname, "..");
const NODE = path.join(ROOT, "node_modules", ".bin", "node");

let dataDir: string;
let dns: TestDns[] = [];
let sink: Sink;
let child: ChildProcess | null = null;

afterEach(async () => {
  if (child && child.exitCode === null) child.kill("SIGKILL");
  await sink?.close();
  await Promise.all(dns.map((d) => d.close()));
  dns = [];
  await fs.rm(dataDir, { recursive: true, force: true });
});

function spawnQueue(configJson: string): Promise<ChildProcess> {
  const c = spawn(NODE, ["-r", "ts-node/register/transpile-only", path.join(__dirname, "queue-fault-child.ts")], {
    cwd: ROOT,
    env: {
      ...process.env,
      MAILSTACK_TEST_CONFIG: configJson,
      TS_NODE_TRANSPILE_ONLY: "1",
      ...(process.env.QUEUE_FAULT_LOG ? { MAILSTACK_TEST_LOG: process.env.QUEUE_FAULT_LOG } : {}),
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  child = c;
  return new Promise((resolve, reject) => {
    c.stdout!.on("data", (d: Buffer) => {
      if (d.toString().includes("ready")) resolve(c);
    });
    c.once("exit", (code) => reject(new Error(`queue child exited early (${code})`)));
  });
}

function kill9(c: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (c.exitCode !== null || c.signalCode !== null) return resolve();
    c.once("exit", () => resolve());
    c.kill("SIGKILL");
  });
}

test("killed with SIGKILL mid-delivery and restarted: delivered at least once, bounced exactly once, nothing lost", async () => {
  dataDir = await tempDir("mailstack-queue-fault-");
  // remote.test's DNS (MX mail.remote.test → 127.0.0.1), reached through the queue stack's own.
  const remote = await startRemoteDns();
  // A receiver that is slow to answer DATA, so kills land while deliveries are in flight.
  sink = await startSink("127.0.0.1", 0, {
    rcpt: (a) => (a.startsWith("bad") ? { code: 550, message: "5.1.1 User unknown" } : undefined),
    dataDelayMs: () => 30 + Math.floor(Math.random() * 90),
  });
  const own = await startOwnDns(
    queueConfig(dataDir, { queue: { minBackoff: 0.2, maxBackoff: 0.5, maxLifetime: 600, scanInterval: 0.2, remotePort: sink.port } }),
    [remote.spec],
  );
  dns = [own.dns, remote];
  const config = own.config;
  const spool = new Spool(config);
  const N = 150;
  const expectBounce = new Set<number>();
  for (let i = 0; i < N; i++) {
    const to = [`good${i}@remote.test`];
    if (i % 3 === 0) {
      to.push(`bad${i}@remote.test`);
      expectBounce.add(i);
    }
    const data = Buffer.from(
      `From: alice@queue.test\r\nTo: ${to.join(", ")}\r\nSubject: burst ${i}\r\nX-Seq: ${i}\r\nMessage-ID: <seq${i}@queue.test>\r\n\r\nmessage ${i}\r\n`,
    );
    await spool.enqueue({ from: "alice@queue.test", to, data });
  }

  const configJson = JSON.stringify(config);
  let kills = 0;
  for (let round = 0; round < 6; round++) {
    const c = await spawnQueue(configJson);
    await new Promise((r) => setTimeout(r, 100 + Math.floor(Math.random() * 300)));
    await kill9(c);
    kills++;
    if ((await listIds(queuePaths(config))).length === 0) break;
  }
  const tKills = Date.now();
  // The last run is left alone until the queue is empty.
  const last = await spawnQueue(configJson);
  await waitFor(async () => (await listIds(queuePaths(config))).length === 0, "an empty queue", 60_000);
  await kill9(last);
  process.stdout.write(`final run took ${Date.now() - tKills} ms\n`);

  // Delivered at least once.
  const seen = new Map<number, number>();
  for (const m of sink.messages) {
    const seq = Number(/^X-Seq: (\d+)/m.exec(m.data.toString())![1]);
    seen.set(seq, (seen.get(seq) ?? 0) + 1);
    expect(m.to.every((t) => t.startsWith("good"))).toBe(true);
  }
  for (let i = 0; i < N; i++) expect(seen.get(i) ?? 0).toBeGreaterThanOrEqual(1);

  // Bounced exactly once: one DSN (by Message-ID) per message with a bad recipient, none for the others.
  const dsns = new Map<number, Set<string>>();
  let copies = 0;
  for (const raw of await inbox(dataDir, "alice")) {
    const text = raw.toString();
    expect(text).toMatch(/^Return-Path: <>\r\n/);
    const seq = Number(/^X-Seq: (\d+)/m.exec(text)![1]);
    const mid = /^Message-ID: (.+)$/m.exec(text)![1]!;
    expect(text).toContain(`Final-Recipient: rfc822; bad${seq}@remote.test`);
    expect(text).not.toContain(`Final-Recipient: rfc822; good${seq}@remote.test`);
    const set = dsns.get(seq) ?? new Set<string>();
    set.add(mid);
    dsns.set(seq, set);
    copies++;
  }
  expect([...dsns.keys()].sort((a, b) => a - b)).toEqual([...expectBounce].sort((a, b) => a - b));
  for (const set of dsns.values()) expect(set.size).toBe(1);

  // Nothing half-written is visible: every DSN in new/ is whole (Maildir tmp/ may hold debris).
  for (const raw of await inbox(dataDir, "alice")) expect(raw.toString()).toMatch(/\r\n--[^\r\n]+--\r\n$/);
  expect(await fs.readdir(path.join(dataDir, "queue", "state"))).toEqual([]);
  const dup = [...seen.values()].filter((n) => n > 1).length;
  process.stdout.write(
    `queue fault test: ${kills} kills, ${N} messages, ${sink.messages.length} deliveries (${dup} duplicated), ${expectBounce.size} DSNs in ${copies} Maildir copies\n`,
  );
}, 120_000);
