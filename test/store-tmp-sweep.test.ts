/**
 * What a writer that died between writing tmp/<name> and renaming it leaves behind is removed, as
 * Dovecot does when it opens a folder: files in tmp/ whose ctime is more than 36 hours old, at
 * most once every 8 hours per folder (the mark is tmp/'s atime). Messages in new/ and cur/, and
 * anything younger, are never touched.
 */
import { execFile } from "node:child_process";
import { promises as fs } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { promisify } from "node:util";
import { startPop3 } from "../pop3";
import { flushAllIndexes, forgetIndexes } from "../store/index-folder";
import { ensureUserMaildir, maildirRoot, sweepTmp, TMP_MAX_AGE_MS, TMP_SWEEP_INTERVAL_MS, writeMessage } from "../store/maildir";
import { MaildirStore } from "../store/mailstore";
import { PASSWORDS, startServiceEnv } from "./helpers/stack";

const run = promisify(execFile);
const HOUR = 3_600_000;
let dataDir: string;
let inbox: string;

beforeEach(async () => {
  dataDir = await fs.mkdtemp(path.join(os.tmpdir(), "mailstack-sweep-"));
  inbox = await ensureUserMaildir(dataDir, "lx");
});
afterEach(async () => {
  await flushAllIndexes();
  forgetIndexes(dataDir);
  await fs.rm(dataDir, { recursive: true, force: true });
});

/** Sets tmp/'s atime (the last sweep's mark) to `msAgo` before now. */
async function markSwept(dir: string, msAgo: number): Promise<void> {
  const st = await fs.stat(path.join(dir, "tmp"));
  await fs.utimes(path.join(dir, "tmp"), new Date(Date.now() - msAgo), st.mtime);
}

const tmpFiles = async (dir: string) => (await fs.readdir(path.join(dir, "tmp"))).sort();

test("removes tmp/ files older than 36 hours and nothing else, then waits 8 hours", async () => {
  const delivered = await writeMessage(inbox, Buffer.from("Subject: kept\r\n\r\nbody\r\n"));
  await fs.writeFile(path.join(inbox, "tmp", "1700000000.M1P1.crashed"), "half a mess");
  await fs.writeFile(path.join(inbox, "tmp", "1700000001.M2P1.crashed"), "");
  await fs.mkdir(path.join(inbox, "tmp", "a-directory"));
  // 37 hours from now, both files are 37 hours old (their ctime is now; it cannot be set back).
  const later = Date.now() + TMP_MAX_AGE_MS + HOUR;
  expect(await sweepTmp(inbox, later)).toBe(2);
  expect(await tmpFiles(inbox)).toEqual(["a-directory"]);
  expect(await fs.readdir(path.join(inbox, delivered.dir))).toEqual([delivered.file]);
  // The sweep marked tmp/: within 8 hours of it, the folder is not read again (though this file
  // is old enough by then).
  await fs.writeFile(path.join(inbox, "tmp", "1700000002.M3P1.crashed"), "x");
  expect(await sweepTmp(inbox, later + HOUR)).toBe(0);
  expect(await tmpFiles(inbox)).toEqual(["1700000002.M3P1.crashed", "a-directory"]);
  // After 8 hours it is.
  expect(await sweepTmp(inbox, later + TMP_SWEEP_INTERVAL_MS + HOUR)).toBe(1);
  expect(await tmpFiles(inbox)).toEqual(["a-directory"]);
});

test("a file being written now is never removed, however long since the last sweep", async () => {
  await fs.writeFile(path.join(inbox, "tmp", "1700000000.M1P1.writing"), "in progress");
  await markSwept(inbox, TMP_SWEEP_INTERVAL_MS + HOUR);
  expect(await sweepTmp(inbox)).toBe(0);
  expect(await tmpFiles(inbox)).toEqual(["1700000000.M1P1.writing"]);
  // It looked, and said so: tmp/'s atime is now.
  const st = await fs.stat(path.join(inbox, "tmp"));
  expect(Date.now() - st.atimeMs).toBeLessThan(TMP_SWEEP_INTERVAL_MS);
  // A folder without tmp/ is no error.
  await fs.rm(path.join(inbox, "tmp"), { recursive: true });
  expect(await sweepTmp(inbox)).toBe(0);
});

test("opening a folder sweeps it (MaildirStore.open), as a POP3 login does", async () => {
  const store = new MaildirStore(dataDir, { idleMs: 0 });
  const sub = path.join(maildirRoot(dataDir, "lx"), ".Sent");
  await markSwept(inbox, TMP_SWEEP_INTERVAL_MS + HOUR);
  await markSwept(sub, TMP_SWEEP_INTERVAL_MS + HOUR);
  await store.open("lx", "Sent");
  const swept = async (dir: string) => Date.now() - (await fs.stat(path.join(dir, "tmp"))).atimeMs < HOUR;
  for (let i = 0; i < 100 && !(await swept(sub)); i++) await new Promise((r) => setTimeout(r, 20));
  expect(await swept(sub)).toBe(true);
  expect(await swept(inbox)).toBe(false);
});

test("a POP3 login through Python's poplib sweeps the INBOX", async () => {
  const env = await startServiceEnv(startPop3, ["pop3", "pop3s"], { trustedNetworks: ["127.0.0.0/8"] });
  try {
    const lxInbox = await ensureUserMaildir(env.dataDir, "lx");
    await markSwept(lxInbox, TMP_SWEEP_INTERVAL_MS + HOUR);
    const script = [
      "import poplib, sys",
      "c = poplib.POP3('127.0.0.1', int(sys.argv[1]))",
      "c.user('lx'); c.pass_(sys.argv[2]); print(c.stat()[0]); c.quit()",
    ].join("\n");
    const { stdout } = await run("python3", ["-c", script, String(env.port), PASSWORDS.lx!]);
    expect(stdout.trim()).toBe("0");
    const st = await fs.stat(path.join(lxInbox, "tmp"));
    expect(Date.now() - st.atimeMs).toBeLessThan(HOUR);
  } finally {
    await env.cleanup();
  }
});
