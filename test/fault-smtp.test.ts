/**
 * SMTP fault tests against the real service process (`mailstack serve smtp`):
 *  - kill -9 at random points during a burst, several times over one data directory: every
 *    message that got 250 is in the Maildir exactly once and complete, no half-written file is
 *    visible in new/ or cur/, and the server starts again cleanly each time;
 *  - fsync failing with EIO (strace's syscall fault injection, attached to the running server):
 *    every client gets a 4xx and never 250, and nothing appears in new/. Once the injection
 *    stops, mail is accepted again.
 * The random points come from a seed printed on failure (FAULT_SEED=... to replay).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { promises as fs } from "node:fs";
import * as path from "node:path";
import {
  checkDelivered,
  faultArea,
  hasService,
  maildirFiles,
  makeMessage,
  FAULT_SEED as SEED,
  SmtpConn,
  sendMail,
  sleep,
  transaction,
  waitFor,
  which,
} from "./fault-helpers";
import { prng } from "./helpers/prng";

const haveSmtp = hasService("smtp");
const describeSmtp = haveSmtp ? describe : describe.skip;
const area = faultArea("fault-smtp", { perTest: true });
const start = (cfg: string, label: string) => area.start("smtp", cfg, label);

describeSmtp("SMTP under kill -9", () => {
  test(`every 250'd message survives repeated kill -9 mid-burst, complete and once (seed ${SEED})`, async () => {
    const rnd = prng(SEED);
    const { file: cfg, dataDir } = await area.config({ listen: { smtp: 0 } });
    const sent = new Map<string, Buffer>();
    const acked = new Set<string>();
    const refusedTemp: string[] = [];
    const cycles = 4;

    for (let cycle = 0; cycle < cycles; cycle++) {
      const svc = await start(cfg, `cycle${cycle}`);
      const port = svc.port("smtp");
      const killAfter = 3 + Math.floor(rnd() * 40);
      let ackedThisCycle = 0;
      let killed = false;
      const workers = Array.from({ length: 8 }, async (_, w) => {
        let k = 0;
        while (!killed) {
          let c: SmtpConn;
          try {
            c = await SmtpConn.open(port);
          } catch {
            return;
          }
          try {
            if ((await c.reply()).code !== 220) return;
            if ((await c.cmd("EHLO burst.example.org")).code !== 250) return;
            // Some connections carry one message, some several.
            const perConn = w % 2 === 0 ? 1 : 5;
            for (let i = 0; i < perConn && !killed; i++) {
              const id = `c${cycle}w${w}m${k++}`;
              const msg = makeMessage(id, 1000 + Math.floor(rnd() * 60_000), SEED + k);
              sent.set(id, msg);
              const r = await transaction(c, "sender@example.org", ["lx@lx.com"], msg);
              if (r.code === 250 && r.stage === "DATA-end") {
                acked.add(id);
                if (++ackedThisCycle >= killAfter && !killed) {
                  killed = true;
                  await sleep(Math.floor(rnd() * 30));
                  await svc.kill9();
                }
              } else if (r.code >= 400 && r.code < 500) refusedTemp.push(`${id}: ${r.text}`);
              else throw new Error(`unexpected reply for ${id}: ${r.stage} ${r.text}`);
            }
          } catch (err) {
            if (!killed) throw err;
            return;
          } finally {
            c.close();
          }
        }
      });
      await Promise.all(workers);
      if (svc.alive) await svc.kill9();
      expect(svc.alive).toBe(false);
    }

    // The server starts again cleanly over the same data and takes mail.
    const svc = await start(cfg, "final");
    const last = makeMessage("final", 500);
    sent.set("final", last);
    const r = await sendMail(svc.port("smtp"), ["lx@lx.com"], last);
    expect(`${r.stage} ${r.code}`).toBe("DATA-end 250");
    acked.add("final");
    await svc.stop();

    const files = await maildirFiles(path.join(dataDir, "mail", "lx"));
    const seen = new Map<string, number>();
    const broken: string[] = [];
    for (const f of files) {
      const c = checkDelivered(f.data, sent);
      if (!c.complete) broken.push(`${f.name} (${c.id ?? "no id"}, ${f.data.length} bytes)`);
      if (c.id) seen.set(c.id, (seen.get(c.id) ?? 0) + 1);
    }
    // Nothing half-written is visible.
    expect(broken).toEqual([]);
    // Every acknowledged message is there, exactly once.
    const missing = [...acked].filter((id) => !seen.has(id));
    const duplicated = [...acked].filter((id) => (seen.get(id) ?? 0) > 1);
    expect({ seed: SEED, missing, duplicated }).toEqual({ seed: SEED, missing: [], duplicated: [] });
    expect(acked.size).toBeGreaterThan(cycles);
    const debris = (await fs.readdir(path.join(dataDir, "mail", "lx", "tmp")).catch(() => [])).length;
    process.stdout.write(
      `kill -9 test (seed ${SEED}): ${cycles} kills, ${sent.size} messages attempted, ${acked.size} got 250, ${files.length} files visible, ${debris} left in tmp/, ${refusedTemp.length} temporary refusals\n`,
    );
  });
});

const haveStrace = which("strace");
const describeStrace = haveSmtp && haveStrace ? describe : describe.skip;

describeStrace("SMTP when fsync fails (strace fault injection)", () => {
  test("clients get 4xx, never 250, and nothing appears in new/", async () => {
    const { file: cfg, dataDir } = await area.config({ listen: { smtp: 0 } });
    const svc = await start(cfg, "fsync");
    const port = svc.port("smtp");
    const lxDir = path.join(dataDir, "mail", "lx");

    // Attach to every thread of the running server (the fsyncs run on libuv's pool threads).
    const strace: ChildProcess = spawn(
      "strace",
      [
        "-f",
        "-p",
        String(svc.pid),
        "-e",
        "trace=fsync,fdatasync,sync_file_range,syncfs",
        "-e",
        "inject=fsync,fdatasync,syncfs:error=EIO",
        "-o",
        path.join(area.dir, "strace.out"),
      ],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    let straceErr = "";
    strace.stderr!.on("data", (d: Buffer) => (straceErr += d.toString()));
    const straceExited = new Promise<void>((r) => strace.once("exit", () => r()));
    try {
      await waitFor(() => /attached/.test(straceErr), "strace to attach");
      await sleep(300);

      const replies: string[] = [];
      for (let i = 0; i < 6; i++) {
        const msg = makeMessage(`eio${i}`, 2000 + i * 5000);
        const r = await sendMail(port, i % 2 ? ["lx@lx.com"] : ["lx@lx.com", "postmaster@lx.com"], msg);
        replies.push(`${r.stage} ${r.code}`);
      }
      // Every transaction ended in a temporary failure at the end of DATA.
      for (const r of replies) expect(r).toMatch(/^DATA-end 4\d\d$/);
      // fsync was really called and failed (the injection is what we think it is).
      const trace = await fs.readFile(path.join(area.dir, "strace.out"), "utf8");
      expect(trace).toMatch(/fsync\(\d+\)\s+= -1 EIO .*\(INJECTED\)/);
      expect((await maildirFiles(lxDir)).map((f) => f.name)).toEqual([]);
      expect(svc.alive).toBe(true);
    } finally {
      strace.kill("SIGTERM");
      await straceExited;
    }

    // With fsync working again, mail is accepted and lands.
    await sleep(200);
    const ok = makeMessage("after", 3000);
    const r = await sendMail(port, ["lx@lx.com"], ok);
    expect(`${r.stage} ${r.code}`).toBe("DATA-end 250");
    const files = await maildirFiles(lxDir);
    expect(files.map((f) => checkDelivered(f.data, new Map([["after", ok]])))).toEqual([{ id: "after", complete: true }]);
  });
});
