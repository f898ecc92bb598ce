/**
 * One queue manager per spool. A second manager on the same data directory would pick the same
 * entries and deliver them twice, so it refuses to start (as Postfix's master does) while a live
 * manager holds `queue/master.lock`; a lock left by a manager that died is broken. `mailstack
 * health queue` reports the queue healthy only while a live manager holds that lock.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { promises as fs } from "node:fs";
import { hostname } from "node:os";
import * as path from "node:path";
import { promisify } from "node:util";
import pino from "pino";
import { stringify } from "yaml";
import { QueueLockedError, type RunningQueue, startQueue } from "../queue/index";
import { queuePaths } from "../queue/spool";
import { HASH, queueConfig, tempDir, waitFor } from "./queue-fixtures";

const run = promisify(execFile);
const BIN = path.resolve(__dirname, "..", "bin", "mailstack");
const silent = pino({ level: "silent" });

const running: RunningQueue[] = [];
const children: ChildProcess[] = [];
afterEach(async () => {
  for (const q of running.splice(0)) await q.close();
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
});

async function start(dataDir: string): Promise<RunningQueue> {
  const q = await startQueue(queueConfig(dataDir), { log: silent });
  running.push(q);
  return q;
}

describe("queue manager lock", () => {
  it("a second manager on the same spool refuses to start, and starts once the first has stopped", async () => {
    const dataDir = await tempDir();
    const first = await start(dataDir);
    const lock = queuePaths({ dataDir }).lock;
    const err = await startQueue(queueConfig(dataDir), { log: silent }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QueueLockedError);
    expect((err as Error).message).toContain(lock);
    expect((err as Error).message).toContain(`${process.pid}:`);
    // The refused manager left the holder's lock alone.
    expect(await fs.readFile(lock, "utf8")).toMatch(new RegExp(`^${process.pid}:`));

    await first.close();
    running.splice(running.indexOf(first), 1);
    await expect(fs.access(lock)).rejects.toThrow(/ENOENT/);
    await start(dataDir);
    expect(await fs.readFile(lock, "utf8")).toMatch(new RegExp(`^${process.pid}:`));
  });

  it("breaks a lock whose holder has died", async () => {
    const dataDir = await tempDir();
    const lock = queuePaths({ dataDir }).lock;
    const dead = spawn(process.execPath, ["-e", ""]);
    const pid = dead.pid;
    await new Promise((r) => dead.on("exit", r));
    await fs.mkdir(path.dirname(lock), { recursive: true });
    await fs.writeFile(lock, `${pid}:${hostname()}:0123456789ab`);
    await start(dataDir);
    expect(await fs.readFile(lock, "utf8")).toMatch(new RegExp(`^${process.pid}:`));
  });

  it("another host's lock that is no longer refreshed goes stale", async () => {
    const dataDir = await tempDir();
    const lock = queuePaths({ dataDir }).lock;
    await fs.mkdir(path.dirname(lock), { recursive: true });
    await fs.writeFile(lock, "4242:some-other-host:0123456789ab");
    // Refreshed just now: held.
    await expect(startQueue(queueConfig(dataDir), { log: silent })).rejects.toBeInstanceOf(QueueLockedError);
    const old = new Date(Date.now() - 10 * 60_000);
    await fs.utimes(lock, old, old);
    await start(dataDir);
  });
});

describe("mailstack serve queue / health queue", () => {
  async function stackFile(): Promise<{ file: string; dataDir: string }> {
    const dir = await tempDir("mailstack-queue-cli-");
    const dataDir = path.join(dir, "data");
    const config = {
      "mailstack:domain": "queue.test",
      "mailstack:publicAddress": "127.0.0.1",
      "mailstack:dataDir": dataDir,
      "mailstack:users": [{ name: "alice", passwordHash: HASH }],
      "mailstack:listen": { address: "127.0.0.1" },
    };
    const file = path.join(dir, "Pulumi.queue.yaml");
    await fs.writeFile(file, stringify({ config }));
    return { file, dataDir };
  }

  function serve(file: string): { child: ChildProcess; output: () => string } {
    const child = spawn(process.execPath, [BIN, "serve", "queue", "--config", file], { stdio: ["ignore", "pipe", "pipe"] });
    children.push(child);
    let out = "";
    child.stdout?.on("data", (d) => (out += d));
    child.stderr?.on("data", (d) => (out += d));
    return { child, output: () => out };
  }

  const health = (file: string) =>
    run(process.execPath, [BIN, "health", "queue", "--config", file]).then(
      (r) => ({ code: 0, out: r.stdout }),
      (e: { code: number; stderr: string }) => ({ code: e.code, out: e.stderr }),
    );

  it("health fails with no manager, passes while one runs, fails after it is killed; a second serve exits", async () => {
    const { file, dataDir } = await stackFile();
    const down = await health(file);
    expect(down.code).toBe(1);
    expect(down.out).toMatch(/no queue manager is running on this spool/);

    const first = serve(file);
    const lock = queuePaths({ dataDir }).lock;
    await waitFor(() => fs.readFile(lock, "utf8").catch(() => ""), "the manager's lock");
    const up = await health(file);
    expect(up).toEqual({ code: 0, out: `queue healthy (0 queued, manager ${(await fs.readFile(lock, "utf8")).trim()})\n` });
    expect(up.out).toContain(`manager ${first.child.pid}:`);

    const second = serve(file);
    const code = await new Promise<number | null>((r) => second.child.on("exit", (c) => r(c)));
    expect(code).toBe(1);
    expect(second.output()).toMatch(/another queue manager is running on this spool/);
    // The first one is still the holder and still healthy.
    expect((await health(file)).code).toBe(0);

    first.child.kill("SIGKILL");
    await new Promise((r) => first.child.on("exit", r));
    const dead = await health(file);
    expect(dead.code).toBe(1);
    expect(dead.out).toMatch(/no queue manager is running/);
    // A restarted manager takes over the dead one's lock.
    const third = serve(file);
    await waitFor(async () => (await fs.readFile(lock, "utf8").catch(() => "")).startsWith(`${third.child.pid}:`), "the new lock");
    expect((await health(file)).code).toBe(0);
  }, 60_000);
});
