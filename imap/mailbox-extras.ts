/**
 * Store capabilities IMAP uses when a Mailbox offers them beyond the `Mailbox` interface:
 *
 * - `readHeader(uid)`: only the header block of a message (CRLF), for SEARCH's header keys, so a
 *   search over a big folder does not read whole messages;
 * - `peekCached(uid, field)`: a cached value without waiting (undefined on a miss), so a
 *   repeated SEARCH over cached fields runs without one promise per message.
 *
 * Without them IMAP uses the interface proper: `read()` and the header cut from it; `cached()`.
 */
import type { Mailbox } from "../store/types";
import { headerEnd } from "./mime";

interface Extras {
  readHeader?(uid: number): Promise<Buffer>;
  peekCached?(uid: number, field: string): unknown;
}

/** The header block of a message (through the blank line that ends it). */
export async function readHeader(mailbox: Mailbox, uid: number): Promise<Buffer> {
  const m = mailbox as Mailbox & Extras;
  if (typeof m.readHeader === "function") return m.readHeader(uid);
  const raw = await mailbox.read(uid);
  return raw.subarray(0, headerEnd(raw) ?? raw.length);
}

/** A synchronous look-up of cached values, when the mailbox has one. */
export function peekCached(mailbox: Mailbox): ((uid: number, field: string) => unknown) | null {
  const m = mailbox as Mailbox & Extras;
  return typeof m.peekCached === "function" ? (uid, field) => m.peekCached!(uid, field) : null;
}
