/**
 * Several OS processes (like the POP3, IMAP and SMTP services) appending, delivering, flagging
 * and syncing one Maildir at once: every message ends up with exactly one UID, UIDs handed out
 * by append() (UIDPLUS) point at the right message, and dovecot-uidlist stays well-formed.
 */
import { spawn } from "node:child_process";
import { promises as fs } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { flushAllIndexes, forgetIndexes } from "../store/index-folder";
import { maildirRoot } from "../store/maildir";
import { MaildirStore } from "../store/mailstore";
import { UidList } from "../store/uidlist";

const NODE = path.join(__dirname, "..", "node_modules", ".bin", "node");
const WORKER = path.join(__dirname, "store-mailbox-worker.ts");

function runWorker(dataDir: string, name: string, count: number): Promise<{ appended: Record<string, number>; delivered: string[] }> {
  return new Promise((resolve, reject) => {
    const child = spawn(NODE, ["-r", "ts-node/register/transpile-only", WORKER, dataDir, "lx", name, String(count)], {
      cwd: path.join(__dirname, ".."),
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    child.on("error", reject);
    child.on("exit", (code) => {
      if (code !== 0) reject(new Error(`worker ${name} exited ${code}: ${err}`));
      else resolve(JSON.parse(out.trim().split("\n").pop()!));
    });
  });
}

let dataDir: string;
beforeEach(async () => {
  dataDir = await fs.mkdtemp(path.join(os.tmpdir(), "mailstack-procs-"));
});
afterEach(async () => {
  forgetIndexes(dataDir);
  await fs.rm(dataDir, { recursive: true, force: true });
});

test("concurrent processes: unique, ordered UIDs; UIDPLUS answers are right", async () => {
  const store = new MaildirStore(dataDir);
  // Create the Maildir first so the workers race on messages, not on mkdir.
  const first = await store.open("lx");
  await first.close();
  const names = ["p1", "p2", "p3", "p4"];
  const per = 30;
  const results = await Promise.all(names.map((n) => runWorker(dataDir, n, per)));
  await flushAllIndexes();
  forgetIndexes(dataDir);
  const root = maildirRoot(dataDir, "lx");
  // Read the folder as a brand-new process would, without our index file.
  await fs.rm(path.join(root, "mailstack-index"), { force: true });
  const mb = await new MaildirStore(dataDir).open("lx");
  const msgs = mb.messages();
  expect(msgs).toHaveLength(names.length * per);
  const uids = msgs.map((m) => m.uid);
  for (let i = 1; i < uids.length; i++) expect(uids[i]!).toBeGreaterThan(uids[i - 1]!);

  const markerOf = new Map<number, string>();
  for (const m of msgs) {
    const text = (await mb.read(m.uid)).toString();
    markerOf.set(m.uid, /X-Marker: (\S+)/.exec(text)![1]!);
  }
  const seen = new Set(markerOf.values());
  expect(seen.size).toBe(names.length * per); // every message exactly once
  for (const r of results) {
    for (const [marker, uid] of Object.entries(r.appended)) expect(markerOf.get(uid)).toBe(marker);
    for (const marker of r.delivered) expect(seen.has(marker)).toBe(true);
  }

  expect(await fs.readdir(path.join(root, "new"))).toEqual([]);
  const lines = (await fs.readFile(path.join(root, "dovecot-uidlist"), "utf8")).trim().split("\n");
  const header = /^3 V(\d+) N(\d+) G([0-9a-f]{32})$/.exec(lines[0]!);
  expect(header).not.toBeNull();
  const recs = lines.slice(1).map((l) => /^(\d+) (?:\S+ )*:(\S+)$/.exec(l)!);
  const recUids = recs.map((r) => Number(r[1]));
  for (let i = 1; i < recUids.length; i++) expect(recUids[i]!).toBeGreaterThan(recUids[i - 1]!);
  // Records may be appended after the header (as Dovecot does): the next UID is max(N, last + 1).
  const list = new UidList(root);
  await list.refresh();
  expect(list.nextUid).toBeGreaterThan(recUids[recUids.length - 1]!);
  expect(list.uidValidity).toBe(Number(header![1]));
  const recByKey = new Map(recs.map((r) => [r[2]!, Number(r[1])]));
  for (const m of msgs) expect(recByKey.get(m.key)).toBe(m.uid);
  await expect(fs.access(path.join(root, "dovecot-uidlist.lock"))).rejects.toThrow();
  await mb.close();
}, 120_000);

test("watch() announces mail delivered by another process", async () => {
  const store = new MaildirStore(dataDir);
  const mb = await store.open("lx");
  const fired = new Promise<void>((resolve) => {
    const off = mb.watch(() => {
      off();
      resolve();
    });
  });
  const code = `new (require("./store/deliver").MaildirDelivery)(${JSON.stringify(dataDir)}).deliverLocal(["lx"], Buffer.from("Subject: hi\\r\\n\\r\\nx\\r\\n")).catch(() => process.exit(1))`;
  const child = spawn(NODE, ["-r", "ts-node/register/transpile-only", "-e", code], { cwd: path.join(__dirname, ".."), stdio: "ignore" });
  const exited = new Promise<number | null>((r) => child.on("exit", r));
  await fired;
  expect(await exited).toBe(0);
  const changes = await mb.sync();
  expect(changes.added).toHaveLength(1);
  await mb.close();
});
