/**
 * A full disk: the data directory is a 2 MiB tmpfs (we run as root; the test is skipped
 * otherwise). SMTP, POP3 and IMAP run as their own processes over it. Mail is delivered until
 * the disk is full; from then on SMTP answers 451/452 (never 250, never 5xx), POP3 and IMAP keep
 * serving every message that got 250, byte for byte, and no file in new/ or cur/ is partial.
 * After space is freed, delivery works again. The tmpfs is unmounted afterwards.
 */
import { execFileSync } from "node:child_process";
import { promises as fs } from "node:fs";
import * as path from "node:path";
import {
  checkDelivered,
  hasService,
  isRoot,
  LX,
  maildirFiles,
  makeMessage,
  type ServiceProcess,
  sendMail,
  startService,
  tempDir,
  writeConfig,
} from "./fault-helpers";
import { ImapClient, ok } from "./helpers/imap-client";
import { Pop3Client } from "./helpers/pop3-client";

const ready = isRoot && hasService("smtp") && hasService("pop3") && hasService("imap");
const describeIf = ready ? describe : describe.skip;

let dir: string;
let dataDir: string;
let mounted = false;
const procs: ServiceProcess[] = [];

beforeAll(async () => {
  if (!ready) return;
  dir = await tempDir("fault-disk");
  dataDir = path.join(dir, "data");
  await fs.mkdir(dataDir);
  execFileSync("mount", ["-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", dataDir]);
  mounted = true;
});

afterAll(async () => {
  for (const p of procs.splice(0)) await p.stop();
  if (mounted) execFileSync("umount", [dataDir]);
  if (dir) await fs.rm(dir, { recursive: true, force: true });
});

async function fillRemaining(file: string): Promise<void> {
  const fh = await fs.open(file, "w");
  const chunk = Buffer.alloc(16 * 1024, 0x41);
  try {
    for (;;) await fh.write(chunk);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOSPC") throw err;
  } finally {
    await fh.close();
  }
  // The last partial chunk: fill byte by byte-ish.
  const fh2 = await fs.open(file, "a");
  try {
    for (;;) await fh2.write(Buffer.alloc(512, 0x41));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOSPC") throw err;
  } finally {
    await fh2.close();
  }
}

describeIf("full disk (2 MiB tmpfs as dataDir)", () => {
  test("SMTP answers 4xx, POP3 and IMAP keep serving, nothing is corrupted", async () => {
    const cfg = await writeConfig(path.join(dir, "config.json"), {
      dataDir,
      listen: { smtp: 0, pop3: 0, imap: 0 },
      extra: { limits: { messageSize: 1024 * 1024, authFailureDelay: 0 } },
    });
    const smtp = await startService("smtp", cfg, "smtp");
    procs.push(smtp);
    const pop3 = await startService("pop3", cfg, "pop3");
    procs.push(pop3);
    const imap = await startService("imap", cfg, "imap");
    procs.push(imap);
    const smtpPort = smtp.port("smtp");

    const sent = new Map<string, Buffer>();
    const acked: string[] = [];
    // A few small messages while there is room.
    for (let i = 0; i < 3; i++) {
      const m = makeMessage(`small${i}`, 2000, i);
      sent.set(`small${i}`, m);
      const r = await sendMail(smtpPort, ["lx@lx.com"], m);
      expect(`${r.stage} ${r.code}`).toBe("DATA-end 250");
      acked.push(`small${i}`);
    }
    // An IMAP session that is open before the disk fills.
    const early = await ImapClient.connect(imap.port("imap"));
    ok(await early.login(LX.name, LX.password), "LOGIN");
    ok(await early.command("SELECT INBOX"), "SELECT");

    // Fill the disk with mail until the server refuses.
    const refusals: string[] = [];
    for (let i = 0; i < 40 && refusals.length === 0; i++) {
      const id = `big${i}`;
      const m = makeMessage(id, 150_000, 100 + i);
      sent.set(id, m);
      const r = await sendMail(smtpPort, ["lx@lx.com"], m);
      if (r.code === 250) acked.push(id);
      else refusals.push(`${r.stage} ${r.code}`);
    }
    expect(refusals.length).toBe(1);
    expect(refusals[0]).toMatch(/ 45[12]$/);

    // Take whatever space is left, then keep trying: every answer is 451/452.
    await fillRemaining(path.join(dataDir, "filler"));
    for (let i = 0; i < 4; i++) {
      const id = `full${i}`;
      const m = makeMessage(id, i % 2 ? 200 : 20_000, 200 + i);
      sent.set(id, m);
      const r = await sendMail(smtpPort, ["lx@lx.com"], m);
      expect(`${r.code}`).toMatch(/^45[12]$/);
    }

    // POP3 serves every accepted message, byte for byte.
    const p = await Pop3Client.connect(pop3.port("pop3"));
    await p.command(`USER ${LX.name}`);
    await p.command(`PASS ${LX.password}`);
    const stat = await p.command("STAT");
    expect(Number(stat.split(" ")[1])).toBe(acked.length);
    const popIds: string[] = [];
    for (let i = 1; i <= acked.length; i++) {
      const c = checkDelivered(await p.retr(i), sent);
      expect(c.complete).toBe(true);
      popIds.push(c.id!);
    }
    expect(popIds.sort()).toEqual([...acked].sort());
    await p.quit();

    // IMAP: the early session still answers; a new session sees every accepted message.
    ok(await early.command("NOOP"), "NOOP");
    const c = await ImapClient.connect(imap.port("imap"));
    c.keepLiterals = true;
    ok(await c.login(LX.name, LX.password), "LOGIN");
    const sel = ok(await c.command("SELECT INBOX"), "SELECT");
    expect(sel.untagged).toContain(`* ${acked.length} EXISTS`);
    const f = ok(await c.command("FETCH 1:* (BODY.PEEK[])"), "FETCH");
    const imapIds = f.literals.map((b) => checkDelivered(b, sent)).map((x) => (x.complete ? x.id : `broken ${x.id}`));
    expect(imapIds.sort()).toEqual([...acked].sort());
    await c.logout();
    await early.logout();

    // Nothing partial in the Maildir.
    const files = await maildirFiles(path.join(dataDir, "mail", "lx"));
    expect(files.map((x) => checkDelivered(x.data, sent)).filter((x) => !x.complete)).toEqual([]);
    expect(files.length).toBe(acked.length);

    // Every service is still up; with space freed, mail flows again.
    expect([smtp.alive, pop3.alive, imap.alive]).toEqual([true, true, true]);
    await fs.rm(path.join(dataDir, "filler"));
    const again = makeMessage("again", 1000, 999);
    const r = await sendMail(smtpPort, ["lx@lx.com"], again);
    expect(`${r.stage} ${r.code}`).toBe("DATA-end 250");
  });
});
