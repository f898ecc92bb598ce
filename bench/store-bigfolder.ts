/**
 * The Maildir store on a big folder: N small messages (default 100,000) in one INBOX.
 *
 *   node_modules/.bin/node -r ts-node/register/transpile-only bench/store-bigfolder.ts [N]
 *
 * Measures: first open (no dovecot-uidlist, no index: readdir, UIDs assigned), a second
 * open in the same process (shared index), sync() with nothing changed, sync() after one
 * delivery, setFlags / append / expunge of one message, INTERNALDATE of every message (stat on
 * first use), cached() misses and hits, and an open in a new process (index file loaded, no
 * rescan). Prints one line per step; nothing is asserted.
 */
import { spawnSync } from "node:child_process";
import { promises as fs } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { MaildirDelivery } from "../store/deliver";
import { flushAllIndexes, forgetIndexes } from "../store/index-folder";
import { maildirRoot, uniqueName } from "../store/maildir";
import { MaildirStore } from "../store/mailstore";

const ms = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;

async function timed<T>(label: string, fn: () => Promise<T>): Promise<T> {
  const t0 = process.hrtime.bigint();
  const r = await fn();
  console.log(`${label.padEnd(44)} ${ms(t0).toFixed(1).padStart(9)} ms`);
  return r;
}

async function populate(dataDir: string, n: number): Promise<void> {
  const store = new MaildirStore(dataDir);
  const first = await store.open("big");
  await first.close();
  const root = maildirRoot(dataDir, "big");
  // An existing mailbox without UID list: half seen, all in cur/ (written without fsync: setup only).
  const batch = 500;
  for (let i = 0; i < n; i += batch) {
    await Promise.all(
      Array.from({ length: Math.min(batch, n - i) }, async (_, k) => {
        const j = i + k;
        const body = `From: sender${j}@example.org\r\nTo: big@lx.com\r\nSubject: message ${j}\r\nMessage-ID: <${j}@example.org>\r\n\r\nHello ${j}\r\n`;
        const name = `${uniqueName(body.length, body.length, 1_700_000_000_000 + j * 1000)}:2,${j % 2 ? "S" : ""}`;
        await fs.writeFile(path.join(root, "cur", name), body);
      }),
    );
  }
}

async function restartChild(dataDir: string): Promise<void> {
  const store = new MaildirStore(dataDir);
  const mb = await timed("open in a new process (index file)", () => store.open("big"));
  await timed("  messages() + FETCH 1:* (UID FLAGS) walk", async () => {
    let n = 0;
    for (const m of mb.messages()) n += m.flags.length + m.uid;
    return n;
  });
  await timed("  sync(), nothing changed", () => mb.sync());
  console.log(`  ${mb.messages().length} messages, UIDVALIDITY ${mb.uidValidity}, UIDNEXT ${mb.uidNext}`);
  await mb.close();
}

async function main(): Promise<void> {
  if (process.argv[2] === "--child") {
    await restartChild(process.argv[3]!);
    return;
  }
  const n = Number(process.argv[2] ?? 100_000);
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), "mailstack-big-"));
  try {
    console.log(`${n} messages in ${dataDir}`);
    await timed("create the Maildir (setup)", () => populate(dataDir, n));
    forgetIndexes(dataDir); // the populating open's (empty) index: start as a new process would
    const store = new MaildirStore(dataDir);
    const a = await timed("first open (scan, assign UIDs; no stat)", () => store.open("big"));
    console.log(`  ${a.messages().length} messages`);
    const b = await timed("second open, same process (shared index)", () => store.open("big"));
    await timed("sync(), nothing changed", () => a.sync());
    await timed("sync(), nothing changed (again)", () => b.sync());
    await new MaildirDelivery(dataDir).deliverLocal(["big"], Buffer.from("Subject: new\r\n\r\nnew\r\n"));
    await timed("sync() after one delivery (new/ → cur/)", () => a.sync());
    await timed("sync() other session (from shared log)", () => b.sync());
    const uid = a.messages()[5]!.uid;
    await timed("setFlags one message", () => a.setFlags([uid], "add", ["\\Flagged"]));
    await timed("sync() other session sees the flag", () => b.sync());
    await timed("append one message", () => a.append(Buffer.from("Subject: appended\r\n\r\nx\r\n"), ["\\Seen"]));
    await timed("expunge one message", () => a.expunge([uid]));
    await timed("sync() after own changes", () => a.sync());
    await new Promise((r) => setTimeout(r, 2100));
    await timed("sync() after the 2 s re-check window", () => a.sync());
    await timed("INTERNALDATE of all (one stat each, first use)", async () => {
      let t = 0;
      for (const m of a.messages()) t += m.internalDate.getTime();
      return t;
    });
    await timed("INTERNALDATE of all (again, known)", async () => {
      let t = 0;
      for (const m of a.messages()) t += m.internalDate.getTime();
      return t;
    });
    await timed("cached() miss on all (compute + queue)", async () => {
      for (const m of a.messages()) await a.cached(m.uid, "size2", async () => m.size * 2);
    });
    await timed("cached() hit on all", async () => {
      for (const m of a.messages()) await a.cached(m.uid, "size2", async () => 0);
    });
    await a.close();
    await b.close();
    await timed("flush index + cache to disk", () => flushAllIndexes());
    const st = await fs.stat(path.join(maildirRoot(dataDir, "big"), "mailstack-index"));
    const ul = await fs.stat(path.join(maildirRoot(dataDir, "big"), "dovecot-uidlist"));
    console.log(`  mailstack-index ${(st.size / 1e6).toFixed(1)} MB, dovecot-uidlist ${(ul.size / 1e6).toFixed(1)} MB`);
    const node = process.execPath;
    const t0 = process.hrtime.bigint();
    const r = spawnSync(node, [...process.execArgv, __filename, "--child", dataDir], { stdio: "inherit", cwd: path.join(__dirname, "..") });
    console.log(`${"new process total (incl. node + ts-node start)".padEnd(44)} ${ms(t0).toFixed(1).padStart(9)} ms`);
    if (r.status !== 0) throw new Error("child failed");
  } finally {
    await fs.rm(dataDir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
