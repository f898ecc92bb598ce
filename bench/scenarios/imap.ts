/**
 * IMAP, mailstack against Dovecot over the same Maildir data (the same files, hard-linked into
 * each server's own Maildir, so neither sees the other's index files or flag changes).
 *
 * 1. Mixed sessions: 10 concurrent clients, each its own user with a 200-message INBOX, for a
 *    fixed time. A session is LOGIN, SELECT, FETCH of 20 messages' headers, FETCH of 3 bodies,
 *    STORE of a flag, APPEND, STORE \Deleted on the appended message, EXPUNGE, LOGOUT: 11
 *    commands, repeated. Reported: sessions/s and commands/s. One untimed session per user
 *    first, so both servers have built their indexes.
 * 2. Big folder: 100,000 messages (20,000 with --quick). Timed in a fresh session each:
 *    SELECT + `UID FETCH 1:* (FLAGS)` (first: the server builds its index; again: with it),
 *    `UID SEARCH UNSEEN`, and `UID SEARCH SUBJECT "needle"` (first and again); each "again"
 *    row and UNSEEN is the median of three sessions. The first
 *    SELECT is then timed again after two more fresh starts of each server with its index files
 *    removed (alternating which goes first), and the median of the three is reported.
 */
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { ImapClient, ok } from "../../test/helpers/imap-client";
import { type Ctx, recordReference, recordService, startService } from "../lib/context";
import { makeMessage, writeFolder } from "../lib/maildir";
import { type BenchUser, benchUsers, type ServiceProcess, writeStackConfig } from "../lib/mailstack";
import type { Mem } from "../lib/procmem";
import { log, median, prng, rangeMs, sleep } from "../lib/util";
import { type SampledDovecot, startSampledDovecot } from "../refs/dovecot";
import { gidOf, uidOf } from "../refs/postfix";

interface Servers {
  ms: ServiceProcess;
  dovecot: SampledDovecot;
  msPort: number;
  dvPort: number;
  users: BenchUser[];
  msIdle: Mem;
  /** To start either server again over the same data. */
  cfg: string;
  dvOpts: Parameters<typeof startSampledDovecot>[1];
  /** Each user's Maildir, per server. */
  folders: { mailstack: string[]; dovecot: string[] };
}

/** Writes the same folders for both servers, then starts mailstack IMAP and Dovecot. */
async function setup(ctx: Ctx, label: string, users: BenchUser[], folder: Parameters<typeof writeFolder>[1]): Promise<Servers> {
  const root = path.join(ctx.root, label);
  const msData = path.join(root, "mailstack", "data");
  const dvMail = path.join(root, "dovecot", "mail");
  const uid = await uidOf("nobody");
  const gid = await gidOf("nobody");
  const t0 = Date.now();
  for (const [i, u] of users.entries()) {
    await writeFolder([path.join(dvMail, u.name), path.join(msData, "mail", u.name)], { ...folder, seed: folder.seed + i }, uid, gid);
  }
  log(`  wrote ${users.length} × ${folder.count} messages in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  const cfg = await writeStackConfig(path.join(root, "mailstack", "config.json"), {
    dataDir: msData,
    users,
    listen: { imap: 0 },
    ...ctx.cert,
    extra: { limits: { connectionsPerClient: 1000, maxConnections: 5000, authFailureDelay: 0 } },
  });
  const ms = await startService(ctx, "imap", cfg, label);
  const dvOpts = { root: path.join(root, "dovecot"), mailDir: dvMail, users, uid, gid };
  const dovecot = await startSampledDovecot(ctx, dvOpts, DOVECOT_TIMING);
  const folders = {
    mailstack: users.map((u) => path.join(msData, "mail", u.name)),
    dovecot: users.map((u) => path.join(dvMail, u.name)),
  };
  return { ms, dovecot, msPort: ms.port("imap"), dvPort: dovecot.dv.o.imapPort, users, msIdle: ms.mem(), cfg, dvOpts, folders };
}

const DOVECOT_TIMING = { settleMs: 500, sampleMs: 200, refreshMs: 250 };

async function teardown(ctx: Ctx, s: Servers, scenario: string): Promise<void> {
  const dvPeak = s.dovecot.stopSampling();
  recordService(ctx, s.ms, scenario, s.msIdle);
  recordReference(ctx, "dovecot", scenario, s.dovecot.idle, dvPeak);
  await s.ms.stop();
  await s.dovecot.dv.stop();
}

interface MixResult {
  sessions: number;
  commands: number;
  errors: number;
  seconds: number;
  firstError?: string;
}

/** One mixed session; returns the number of commands that completed OK. */
async function mixedSession(port: number, user: BenchUser, rnd: () => number, appendSize: number, counter: { n: number }): Promise<void> {
  const c = await ImapClient.connect(port);
  try {
    const step = (r: Awaited<ReturnType<ImapClient["command"]>>, what: string) => {
      ok(r, what);
      counter.n++;
      return r;
    };
    step(await c.login(user.name, user.password), "LOGIN");
    const sel = step(await c.command("SELECT INBOX"), "SELECT");
    const exists = Number(sel.untagged.map((l) => /^\* (\d+) EXISTS/i.exec(l)?.[1]).find((x) => x !== undefined) ?? 0);
    if (exists > 0) {
      step(
        await c.command(
          `FETCH 1:${Math.min(exists, 20)} (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT DATE MESSAGE-ID)])`,
        ),
        "FETCH headers",
      );
      for (let k = 0; k < 3; k++) step(await c.command(`FETCH ${1 + Math.floor(rnd() * exists)} (BODY[])`), "FETCH body");
      step(await c.command(`STORE ${1 + Math.floor(rnd() * exists)} ${rnd() < 0.5 ? "+" : "-"}FLAGS (\\Flagged)`), "STORE");
    }
    const app = step(await c.append("INBOX", makeMessage(900_000 + Math.floor(rnd() * 1e6), appendSize, rnd)), "APPEND");
    const appendUid = /\[APPENDUID \d+ (\d+)\]/i.exec(app.text)?.[1];
    if (appendUid) step(await c.command(`UID STORE ${appendUid} +FLAGS.SILENT (\\Deleted)`), "UID STORE");
    else {
      const noop = await c.command("NOOP");
      const n = [...app.untagged, ...noop.untagged]
        .map((l) => /^\* (\d+) EXISTS/i.exec(l)?.[1])
        .filter(Boolean)
        .pop();
      step(await c.command(`STORE ${n ?? "*"} +FLAGS.SILENT (\\Deleted)`), "STORE \\Deleted");
    }
    step(await c.command("EXPUNGE"), "EXPUNGE");
    step(await c.command("LOGOUT"), "LOGOUT");
  } finally {
    c.destroy();
  }
}

async function runMix(port: number, users: BenchUser[], seconds: number, seed: number): Promise<MixResult> {
  // Warm-up: one untimed session per user (indexes built, caches filled).
  await Promise.all(users.map((u, i) => mixedSession(port, u, prng(seed + i), 2048, { n: 0 })));
  const counter = { n: 0 };
  let sessions = 0;
  let errors = 0;
  let firstError: string | undefined;
  const end = Date.now() + seconds * 1000;
  const t0 = process.hrtime.bigint();
  await Promise.all(
    users.map(async (u, i) => {
      const rnd = prng(seed * 31 + i);
      while (Date.now() < end) {
        try {
          await mixedSession(port, u, rnd, 1024 + Math.floor(rnd() * 4096), counter);
          sessions++;
        } catch (err) {
          errors++;
          firstError ??= (err as Error).message;
          if (errors > 1000) break;
          await sleep(10);
        }
      }
    }),
  );
  const elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
  return { sessions, commands: counter.n, errors, seconds: elapsed, ...(firstError ? { firstError } : {}) };
}

export async function imapScenario(ctx: Ctx): Promise<void> {
  const seconds = ctx.quick ? 4 : 10;
  const users = await benchUsers(Array.from({ length: 10 }, (_, i) => `b${String(i + 1).padStart(2, "0")}`));
  const s = await setup(ctx, "imap-mix", users, { count: 200, minSize: 1024, maxSize: 16 * 1024, seenFraction: 0.5, seed: 1000 });
  try {
    // Alternate the servers and keep each one's best run (other load only slows a run down).
    const rounds = ctx.quick ? 1 : 2;
    const msRuns: MixResult[] = [];
    const dvRuns: MixResult[] = [];
    for (let round = 0; round < rounds; round++) {
      log(`imap mix: mailstack, 10 clients, ${seconds} s`);
      const m = await runMix(s.msPort, users, seconds, 7 + round);
      msRuns.push(m);
      log(`  mailstack: ${m.sessions} sessions, ${m.commands} commands, ${m.errors} errors${m.firstError ? ` (${m.firstError})` : ""}`);
      log(`imap mix: Dovecot, 10 clients, ${seconds} s`);
      const d = await runMix(s.dvPort, users, seconds, 7 + round);
      dvRuns.push(d);
      log(`  Dovecot:   ${d.sessions} sessions, ${d.commands} commands, ${d.errors} errors${d.firstError ? ` (${d.firstError})` : ""}`);
    }
    const rate = (r: MixResult) => r.sessions / r.seconds;
    const best = (xs: MixResult[]) => xs.reduce((x, y) => (rate(y) > rate(x) ? y : x));
    const ms = best(msRuns);
    const dv = best(dvRuns);
    const note = [
      ms.errors ? `mailstack: ${ms.errors} failed sessions, first: ${ms.firstError}` : "",
      dv.errors ? `Dovecot: ${dv.errors} failed sessions, first: ${dv.firstError}` : "",
    ]
      .filter(Boolean)
      .concat(
        rounds > 1
          ? [
              `best of ${rounds}: mailstack ${msRuns.map((r) => rate(r).toFixed(1)).join("/")}, Dovecot ${dvRuns.map((r) => rate(r).toFixed(1)).join("/")} sessions/s`,
            ]
          : [],
      )
      .join("; ");
    const refName = `Dovecot ${ctx.versions.dovecot ?? ""}`.trim();
    const row = (what: "sessions" | "commands", unit: string, extra: { note?: string } = {}) =>
      ctx.rows.push({
        scenario: "IMAP mixed sessions",
        metric: `10 clients, ${seconds} s: ${what}`,
        unit,
        mailstack: ms[what] / ms.seconds,
        reference: dv[what] / dv.seconds,
        refName,
        better: "higher",
        goalRatio: 1.0,
        ...extra,
      });
    row("sessions", "sessions/s", note ? { note } : {});
    row("commands", "cmd/s");
  } finally {
    await teardown(ctx, s, "imap mix");
  }
}

interface Timed {
  ms: number | null;
  detail: string;
  /** For a median: the range of the samples. */
  range?: string;
}

/** Sessions per "again" row of the big folder. */
const AGAIN = 3;

async function timed<T>(fn: () => Promise<T>, timeoutMs: number): Promise<{ ms: number | null; value: T | null; error?: string }> {
  const t0 = process.hrtime.bigint();
  let timer: NodeJS.Timeout | undefined;
  try {
    const value = await Promise.race([
      fn(),
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs / 1000} s`)), timeoutMs))),
    ]);
    return { ms: Number(process.hrtime.bigint() - t0) / 1e6, value };
  } catch (err) {
    return { ms: null, value: null, error: (err as Error).message };
  } finally {
    if (timer) clearTimeout(timer);
  }
}

interface BigResult {
  selectFetchFirst: Timed;
  selectFetchAgain: Timed;
  searchUnseen: Timed;
  searchSubjectFirst: Timed;
  searchSubjectAgain: Timed;
}

const BIG_LIMIT_MS = 300_000;

/** SELECT INBOX + `UID FETCH 1:* (FLAGS)` in a fresh session, timed from SELECT. */
async function selectFetch(port: number, user: BenchUser): Promise<Timed> {
  const c = await ImapClient.connect(port);
  try {
    ok(await c.login(user.name, user.password), "LOGIN");
    const r = await timed(async () => {
      const sel = ok(await c.command("SELECT INBOX"), "SELECT");
      const f = ok(await c.command("UID FETCH 1:* (FLAGS)"), "UID FETCH");
      return {
        exists: sel.untagged.find((l) => / EXISTS$/i.test(l)) ?? "?",
        fetched: f.untagged.filter((l) => / FETCH /i.test(l)).length,
      };
    }, BIG_LIMIT_MS);
    return { ms: r.ms, detail: r.value ? `${r.value.exists}, ${r.value.fetched} FETCH lines` : (r.error ?? "") };
  } finally {
    await c.logout();
  }
}

/** Removes a Maildir's index, cache and UID list files (everything but cur/, new/ and tmp/). */
async function dropIndexes(dir: string): Promise<void> {
  for (const e of await fs.readdir(dir, { withFileTypes: true }))
    if (!e.isDirectory()) await fs.rm(path.join(dir, e.name), { force: true });
}

/** The median of the timings that finished, with their range; a failed one is named. */
function medianTimed(xs: Timed[]): { t: Timed; note: string } {
  const done = xs.filter((x) => x.ms !== null).map((x) => x.ms!);
  const failed = xs.find((x) => x.ms === null);
  const detail = failed ? failed.detail : xs[0]!.detail;
  if (done.length === 0) return { t: { ms: null, detail }, note: "" };
  const range = rangeMs(done);
  return { t: { ms: median(done), detail }, note: xs.length > 1 ? range : "" };
}

async function bigFolderRun(port: number, user: BenchUser, expected: number): Promise<BigResult> {
  const limit = BIG_LIMIT_MS;
  // A session with the index built takes tens of milliseconds: one sample is mostly noise, so
  // those rows are the median of AGAIN sessions (their range goes in the row's note).
  const again = async (fn: () => Promise<Timed>): Promise<Timed> => {
    const xs: Timed[] = [];
    for (let i = 0; i < AGAIN; i++) xs.push(await fn());
    const m = medianTimed(xs);
    return m.note ? { ...m.t, range: m.note } : m.t;
  };
  const selectFetchFirst = await selectFetch(port, user);
  const selectFetchAgain = await again(() => selectFetch(port, user));
  const search = async (criteria: string): Promise<Timed> => {
    const c = await ImapClient.connect(port);
    try {
      ok(await c.login(user.name, user.password), "LOGIN");
      ok(await c.command("SELECT INBOX"), "SELECT");
      const r = await timed(async () => ok(await c.command(`UID SEARCH ${criteria}`), "SEARCH"), limit);
      const hits = r.value ? (r.value.untagged.find((l) => /^\* SEARCH/i.test(l)) ?? "").split(" ").length - 2 : 0;
      return { ms: r.ms, detail: r.value ? `${hits} hits` : (r.error ?? "") };
    } finally {
      await c.logout();
    }
  };
  const searchUnseen = await again(() => search("UNSEEN"));
  const searchSubjectFirst = await search('SUBJECT "needle"');
  const searchSubjectAgain = await again(() => search('SUBJECT "needle"'));
  void expected;
  return { selectFetchFirst, selectFetchAgain, searchUnseen, searchSubjectFirst, searchSubjectAgain };
}

export async function bigFolderScenario(ctx: Ctx): Promise<void> {
  const count = ctx.quick ? 20_000 : 100_000;
  const users = await benchUsers(["big"]);
  log(`imap big folder: writing ${count} messages`);
  const s = await setup(ctx, "imap-big", users, { count, minSize: 800, maxSize: 4000, seenFraction: 0.7, seed: 4242 });
  const user = users[0]!;
  // The first SELECT after a start is one sample and swings with the machine's load: both
  // servers are started afresh `rounds` times with their index files removed, in alternating
  // order, and the median is reported (with the range).
  const rounds = ctx.quick ? 1 : 3;
  let running = true;
  try {
    log(`imap big folder: mailstack`);
    const ms = await bigFolderRun(s.msPort, user, count);
    log(`  mailstack: ${JSON.stringify(ms)}`);
    log(`imap big folder: Dovecot`);
    const dv = await bigFolderRun(s.dvPort, user, count);
    log(`  Dovecot:   ${JSON.stringify(dv)}`);
    await teardown(ctx, s, "imap big folder");
    running = false;
    const msFirst = [ms.selectFetchFirst];
    const dvFirst = [dv.selectFetchFirst];
    for (let round = 1; round < rounds; round++) {
      for (const dir of [...s.folders.mailstack, ...s.folders.dovecot]) await dropIndexes(dir);
      for (const who of round % 2 ? ["Dovecot", "mailstack"] : ["mailstack", "Dovecot"]) {
        if (who === "mailstack") {
          const sp = await startService(ctx, "imap", s.cfg, `imap-big-${round + 1}`);
          await sleep(DOVECOT_TIMING.settleMs);
          msFirst.push(await selectFetch(sp.port("imap"), user));
          await sp.stop();
        } else {
          const d = await startSampledDovecot(ctx, s.dvOpts, DOVECOT_TIMING);
          dvFirst.push(await selectFetch(d.dv.o.imapPort, user));
          d.stopSampling();
          await d.dv.stop();
        }
      }
      log(
        `  first SELECT + FETCH, start ${round + 1}: mailstack ${msFirst[round]!.ms?.toFixed(0)} ms, Dovecot ${dvFirst[round]!.ms?.toFixed(0)} ms`,
      );
    }
    const msMedian = medianTimed(msFirst);
    const dvMedian = medianTimed(dvFirst);
    const refName = `Dovecot ${ctx.versions.dovecot ?? ""}`.trim();
    const row = (metric: string, a: Timed, b: Timed, extra?: string) => {
      const notes: string[] = extra ? [extra] : [];
      if (a.range && b.range) notes.push(`range: mailstack ${a.range}, Dovecot ${b.range}`);
      if (a.ms === null) notes.push(`mailstack: ${a.detail}`);
      if (b.ms === null) notes.push(`Dovecot: ${b.detail}`);
      if (a.ms !== null && b.ms !== null && a.detail !== b.detail) notes.push(`answers differ: mailstack ${a.detail}; Dovecot ${b.detail}`);
      ctx.rows.push({
        scenario: `IMAP ${count.toLocaleString("en-US")}-msg folder`,
        metric,
        unit: "ms",
        mailstack: a.ms,
        reference: b.ms,
        refName,
        better: "lower",
        goalRatio: 1.0,
        ...(notes.length ? { note: notes.join("; ") } : {}),
      });
    };
    row(
      `SELECT + UID FETCH 1:* (FLAGS), first (index built)${rounds > 1 ? `, median of ${rounds} starts` : ""}`,
      msMedian.t,
      dvMedian.t,
      rounds > 1 ? `range over the starts: mailstack ${msMedian.note}, Dovecot ${dvMedian.note}` : undefined,
    );
    row(`SELECT + UID FETCH 1:* (FLAGS), again (median of ${AGAIN})`, ms.selectFetchAgain, dv.selectFetchAgain);
    row(`UID SEARCH UNSEEN (median of ${AGAIN})`, ms.searchUnseen, dv.searchUnseen);
    row('UID SEARCH SUBJECT "needle", first', ms.searchSubjectFirst, dv.searchSubjectFirst);
    row(`UID SEARCH SUBJECT "needle", again (median of ${AGAIN})`, ms.searchSubjectAgain, dv.searchSubjectAgain);
  } finally {
    if (running) await teardown(ctx, s, "imap big folder");
    await fs.rm(path.join(ctx.root, "imap-big"), { recursive: true, force: true });
  }
}
