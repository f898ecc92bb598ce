/**
 * Maildir helpers for the benchmark: counting and verifying delivered mail, and generating the
 * same folder contents for mailstack and for Dovecot.
 */
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { prng } from "./util";

/** Number of entries in cur/ and new/ (cheap; used while waiting for deliveries). */
export async function countMaildir(dir: string): Promise<number> {
  let n = 0;
  for (const sub of ["new", "cur"]) {
    try {
      n += (await fs.readdir(path.join(dir, sub))).length;
    } catch {
      // not created yet
    }
  }
  return n;
}

export interface Verified {
  /** Distinct messages whose body is exactly what smtp-source sent. */
  verified: number;
  files: number;
  incomplete: number;
  duplicates: number;
}

/**
 * Checks every file in cur/ and new/ against what `smtp-source -l <bodyBytes>` sends: a
 * Message-Id header, and a body of `bodyBytes` bytes of lines `<digit>XXXX…` with CRLF line ends
 * (plus the final CRLF); line ends are compared in CRLF form whatever the Maildir stores. Counts distinct Message-Ids, so a duplicate is not counted twice.
 */
export async function verifySmtpSource(dir: string, bodyBytes: number): Promise<Verified> {
  const ids = new Set<string>();
  let files = 0;
  let incomplete = 0;
  let duplicates = 0;
  for (const sub of ["new", "cur"]) {
    let names: string[] = [];
    try {
      names = await fs.readdir(path.join(dir, sub));
    } catch {
      continue;
    }
    for (let i = 0; i < names.length; i += 64) {
      const batch = await Promise.all(names.slice(i, i + 64).map((n) => fs.readFile(path.join(dir, sub, n)).catch(() => null)));
      for (const buf of batch) {
        files++;
        if (!buf) {
          incomplete++;
          continue;
        }
        const text = buf.toString("latin1").replace(/\r?\n/g, "\r\n");
        const split = text.indexOf("\r\n\r\n");
        const head = split >= 0 ? text.slice(0, split) : text;
        const body = split >= 0 ? text.slice(split + 4) : "";
        const id = /^Message-Id:\s*(\S+)/im.exec(head)?.[1];
        // smtp-source -l N: N bytes of "<digit>XXX…" lines with CRLF, then a final CRLF.
        if (!id || body.length < bodyBytes || body.length > bodyBytes + 2 || !/^([0-9X]+\r\n)+(\r\n)?$/.test(body)) {
          incomplete++;
          continue;
        }
        if (ids.has(id)) duplicates++;
        else ids.add(id);
      }
    }
  }
  return { verified: ids.size, files, incomplete, duplicates };
}

const WORDS =
  "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu mail stack server folder message index".split(
    " ",
  );

/**
 * A deterministic RFC 5322 message, about `size` bytes, CRLF line ends. `n` makes the Subject
 * and Message-ID unique; every 1000th message carries the word "needle" in its Subject (the
 * SEARCH benchmark looks for it).
 */
export function makeMessage(n: number, size: number, rnd: () => number): Buffer {
  const from = `sender${n % 97}@example.org`;
  const subj = `${n % 1000 === 7 ? "needle " : ""}report ${n} ${WORDS[n % WORDS.length]} ${WORDS[(n * 7) % WORDS.length]}`;
  const date = new Date(Date.UTC(2024, 0, 1) + n * 60_000).toUTCString().replace("GMT", "+0000");
  const head =
    `Return-Path: <${from}>\r\n` +
    `Received: from client.example.org (client.example.org [192.0.2.${n % 250}])\r\n\tby mail.lx.com with ESMTP id B${n}; ${date}\r\n` +
    `From: Sender ${n % 97} <${from}>\r\n` +
    `To: <user@lx.com>\r\n` +
    `Subject: ${subj}\r\n` +
    `Date: ${date}\r\n` +
    `Message-ID: <bench.${n}@example.org>\r\n` +
    `MIME-Version: 1.0\r\n` +
    `Content-Type: text/plain; charset=us-ascii\r\n\r\n`;
  const lines: string[] = [];
  let len = head.length;
  while (len < size) {
    let line = "";
    while (line.length < 70) line += `${WORDS[Math.floor(rnd() * WORDS.length)]} `;
    lines.push(line.trimEnd());
    len += line.length + 1;
  }
  return Buffer.from(`${head}${lines.join("\r\n")}\r\n`);
}

export interface FolderSpec {
  count: number;
  /** Message sizes are drawn uniformly from [minSize, maxSize]. */
  minSize: number;
  maxSize: number;
  /** Fraction of messages already \Seen (in cur/ with `:2,S`). */
  seenFraction: number;
  seed: number;
}

/**
 * Writes a folder's messages into `dirs` (each a Maildir: cur/ new/ tmp/), the same files into
 * each: the first directory gets the bytes, the others hard links (the servers only rename and
 * unlink, never rewrite, so sharing inodes is safe). Everything goes into cur/ with its flags,
 * as a client that has seen the folder leaves it. File names carry `S=` (size), as Dovecot and
 * mailstack both write them.
 */
export async function writeFolder(dirs: string[], spec: FolderSpec, uid?: number, gid?: number): Promise<number> {
  const rnd = prng(spec.seed);
  for (const d of dirs) for (const sub of ["cur", "new", "tmp"]) await fs.mkdir(path.join(d, sub), { recursive: true });
  let bytes = 0;
  const base = 1_700_000_000;
  const pending: Promise<void>[] = [];
  for (let i = 1; i <= spec.count; i++) {
    const size = spec.minSize + Math.floor(rnd() * (spec.maxSize - spec.minSize + 1));
    const data = makeMessage(i, size, rnd);
    bytes += data.length;
    const seen = rnd() < spec.seenFraction;
    const name = `${base + i}.M${i}P1.bench,S=${data.length},W=${data.length}:2,${seen ? "S" : ""}`;
    const first = path.join(dirs[0]!, "cur", name);
    const mtime = new Date((base + i) * 1000);
    pending.push(
      (async () => {
        await fs.writeFile(first, data);
        await fs.utimes(first, mtime, mtime);
        for (const d of dirs.slice(1)) await fs.link(first, path.join(d, "cur", name));
        if (uid !== undefined && gid !== undefined) await fs.chown(first, uid, gid);
      })(),
    );
    if (pending.length >= 256) await Promise.all(pending.splice(0));
  }
  await Promise.all(pending);
  if (uid !== undefined && gid !== undefined) for (const d of dirs) await chownTree(d, uid, gid);
  return bytes;
}

/** chown of a directory tree's directories (files are chowned as they are written). */
export async function chownTree(dir: string, uid: number, gid: number): Promise<void> {
  await fs.chown(dir, uid, gid);
  for (const e of await fs.readdir(dir, { withFileTypes: true })) {
    if (e.isDirectory()) await chownTree(path.join(dir, e.name), uid, gid);
  }
}
