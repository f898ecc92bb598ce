/**
 * RETR's response from the message file (RFC 1939 §5: the message, CRLF, dot-stuffed, ".CRLF").
 *
 * - Messages up to `WHOLE_MAX` bytes are read in one go (open, one read, close: S= in the name
 *   gives the size, so there is no stat; a name without S= costs an fstat) into a scratch buffer
 *   shared by every session, and encoded straight into an output buffer the session reuses. The
 *   response leaves in one write.
 * - Larger messages are streamed: `CHUNK` bytes at a time are read, encoded (BodyEncoder keeps
 *   line state across chunks) and written, waiting for the socket to drain when it asks to, so a
 *   session holds about one chunk whatever the message size.
 * - Read-ahead: clients fetch messages one after the other and spend a while on each answer. Once
 *   a RETR is answered and no command is waiting, the next message's response is built
 *   (`prepareNext`), so the next RETR is answered without touching the disk. Maildir files never
 *   change once written, so a prepared response stays right; it is used only for the same
 *   message (number and Maildir key) and only if the session has not marked it deleted. A
 *   message that another session expunges after it was read ahead is still sent: the bytes are
 *   that message's, and RFC 1939 fixes a session's view of the maildrop at login anyway.
 *
 * Stores that are not Maildir-backed (no `messageFile`) and files renamed or expunged between
 * the index and the open are read through `Mailbox.read()`, which looks again.
 */
import { closeSync, constants, promises as fs, fstatSync, openSync, readSync } from "node:fs";
import type { MessageFile } from "../store/mailbox";
import type { Mailbox } from "../store/types";
import { readMessage } from "./commands/read";
import type { MessageEntry, Pop3Session } from "./session";
import { BodyEncoder, encodeResponse, ok, Pop3Error, responseBound } from "./wire";

/** Messages up to this size (on disk) are read and sent whole. */
export const WHOLE_MAX = 256 * 1024;
/** Messages up to this size are read ahead. */
export const PREPARE_MAX = 128 * 1024;
/** Read size when streaming a larger message. */
export const CHUNK = 128 * 1024;

const octetsText = (octets: number) => `${octets} octets`;

/** Read buffer shared by all sessions: reads and encoding are synchronous, so one is enough. */
let scratch: Buffer = Buffer.allocUnsafeSlow(16 * 1024);

interface FileMailbox extends Mailbox {
  messageFile(uid: number): MessageFile | null;
}

function fileOf(mailbox: Mailbox, uid: number): MessageFile | null {
  const m = mailbox as Partial<FileMailbox>;
  return typeof m.messageFile === "function" ? m.messageFile.call(mailbox, uid) : null;
}

function notFound(err: unknown): boolean {
  return (err as NodeJS.ErrnoException)?.code === "ENOENT";
}

/**
 * The whole file when it has at most `max` bytes, as a view of the shared scratch buffer (valid
 * until the next call), or null when it is larger. `diskSize` (S= from the name) saves the stat.
 * Throws what open/read throw (ENOENT when the file was renamed or expunged meanwhile).
 */
export function readWhole(path: string, diskSize: number | null, max: number): Buffer | null {
  const fd = openSync(path, constants.O_RDONLY);
  try {
    const expected = diskSize ?? fstatSync(fd).size;
    if (expected > max) return null;
    // Ask for one byte more than expected: a short read at or past the expected size is the end
    // of the file, so one read() is enough. A file longer than its name says is read on to its
    // end, and so is one that gave a short read before it (which regular files do not).
    let n = 0;
    for (;;) {
      const want = Math.max(expected + 1 - n, 4096);
      if (scratch.length < n + want) {
        const bigger = Buffer.allocUnsafeSlow(Math.max(n + want, scratch.length * 2));
        scratch.copy(bigger, 0, 0, n);
        scratch = bigger;
      }
      const got = readSync(fd, scratch, n, want, null);
      if (got === 0) break;
      n += got;
      if (n > max) return null;
      if (got < want && n >= expected) break;
    }
    return scratch.subarray(0, n);
  } finally {
    closeSync(fd);
  }
}

/** Whether bytes read from `file` can skip LF → CRLF conversion: the name vouches and the size agrees. */
function clean(file: MessageFile, bytes: number): boolean {
  return file.crlf && file.diskSize === bytes;
}

/** Answers RETR for a message that exists and is not marked deleted. */
export async function retrieve(s: Pop3Session, e: MessageEntry): Promise<void> {
  const prepared = s.prepared;
  s.prepared = null;
  if (prepared && prepared.number === e.number && prepared.key === e.info.key) {
    e.retrieved = true;
    await s.sendFrom(prepared.buffer, prepared.data);
    return;
  }
  const file = fileOf(s.mailbox!, e.info.uid);
  if (file) {
    let raw: Buffer | null | undefined;
    try {
      raw = readWhole(file.path, file.diskSize, WHOLE_MAX);
    } catch (err) {
      if (!notFound(err)) throw readFailed(s, e, err);
      raw = undefined; // renamed (flags) or expunged meanwhile: the store looks again
    }
    if (raw === null) {
      await stream(s, e, file);
      return;
    }
    if (raw !== undefined) {
      const out = s.outputBuffer(responseBound(raw.length));
      const data = encodeResponse(raw, !clean(file, raw.length), octetsText, out);
      e.retrieved = true;
      await s.sendFrom(out, data);
      return;
    }
  }
  const data = await readMessage(s, e); // CRLF line ends already
  const out = s.outputBuffer(responseBound(data.length));
  e.retrieved = true;
  await s.sendFrom(out, encodeResponse(data, false, octetsText, out));
}

/**
 * After a RETR: builds the response for message `number` ahead of its RETR, when it exists, is
 * not marked deleted, is small, and no command is waiting. Failures are ignored (the RETR itself
 * will read the message again and report them).
 */
export function prepareNext(s: Pop3Session, number: number): void {
  if (s.closed || s.inputWaiting || !s.mailbox) return;
  const e = s.entries[number - 1];
  if (!e || e.deleted) return;
  let file: MessageFile | null;
  try {
    file = fileOf(s.mailbox, e.info.uid);
    if (!file || (file.diskSize !== null && file.diskSize > PREPARE_MAX)) return;
    const raw = readWhole(file.path, file.diskSize, PREPARE_MAX);
    if (!raw) return;
    const buffer = s.outputBuffer(responseBound(raw.length));
    const data = encodeResponse(raw, !clean(file, raw.length), octetsText, buffer);
    s.prepared = { number, key: e.info.key, buffer, data };
  } catch {
    // e.g. renamed meanwhile: RETR reads it the usual way
  }
}

/** A message too large to hold whole: read, encode and write it a chunk at a time. */
async function stream(s: Pop3Session, e: MessageEntry, file: MessageFile): Promise<void> {
  let fh: fs.FileHandle;
  try {
    fh = await fs.open(file.path, "r");
  } catch (err) {
    if (!notFound(err)) throw readFailed(s, e, err);
    // Renamed or expunged meanwhile: the store looks again (and reads it whole).
    const data = await readMessage(s, e);
    e.retrieved = true;
    await s.send(encodeResponse(data, false, octetsText));
    return;
  }
  try {
    // The status line gives the size LIST gave (the name's W=, or what the index measured), as
    // Dovecot does: the body is not known before it is streamed.
    const status = ok(octetsText(e.info.size));
    const input = Buffer.allocUnsafeSlow(CHUNK);
    const enc = new BodyEncoder(true);
    let first = true;
    for (;;) {
      let got: number;
      try {
        got = (await fh.read(input, 0, CHUNK, null)).bytesRead;
      } catch (err) {
        if (first) throw readFailed(s, e, err);
        // The status line is out: a truncated response must not look complete. Hang up.
        s.log.error({ err: (err as Error).message, uid: e.info.uid }, "read failed while sending a message");
        await s.abort("read error");
        return;
      }
      if (s.closed) return;
      if (got === 0) break;
      const out = Buffer.allocUnsafeSlow((first ? status.length : 0) + BodyEncoder.maxEncoded(got));
      let o = first ? out.write(status, 0, "latin1") : 0;
      first = false;
      o = enc.encode(input.subarray(0, got), out, o);
      await s.send(out.subarray(0, o));
      if (s.closed) return;
    }
    const tail = Buffer.allocUnsafe((first ? status.length : 0) + BodyEncoder.MAX_FINISH);
    const o = first ? tail.write(status, 0, "latin1") : 0;
    e.retrieved = true;
    await s.send(tail.subarray(0, enc.finish(tail, o)));
  } finally {
    await fh.close().catch(() => undefined);
  }
}

function readFailed(s: Pop3Session, e: MessageEntry, err: unknown): Pop3Error {
  s.log.error({ err: (err as Error).message, uid: e.info.uid }, "read failed");
  return new Pop3Error("Error reading the message.", "SYS/TEMP");
}
