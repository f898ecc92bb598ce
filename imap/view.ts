/**
 * A session's view of its selected mailbox: the IMAP sequence-number space (RFC 3501 §2.3.1.2).
 *
 * The store's `Mailbox.messages()` changes when we call `sync()`; the client's numbering may
 * only change when we tell it (EXPUNGE/VANISHED, EXISTS). So the session keeps its own ascending
 * UID list and looks message data up in the store's view; a message another session expunged
 * stays here (as "pending") until an EXPUNGE may be sent.
 */

import type { Mailbox, MessageInfo } from "../store/types";
import { lowerBound } from "./seqset";

export class SelectedView {
  /** UIDs in sequence order: uids[seq - 1]. */
  uids: number[];
  /** Expunged by someone, not yet announced (RFC 3501 §7.4.1 forbids it during FETCH/STORE/SEARCH). */
  readonly pendingRemoved = new Set<number>();
  /** Flags this session reported or set itself, so sync() does not report them twice. */
  readonly knownFlags = new Map<number, string>();
  /** Keywords announced in FLAGS (lower-case → as written). */
  readonly keywords = new Map<string, string>();

  constructor(
    readonly mailbox: Mailbox,
    /** The name as the client should see it (UTF-8; the session encodes it). */
    readonly name: string,
    readonly readOnly: boolean,
  ) {
    const msgs = mailbox.messages();
    this.uids = new Array<number>(msgs.length);
    for (let i = 0; i < msgs.length; i++) this.uids[i] = msgs[i]!.uid;
  }

  get count(): number {
    return this.uids.length;
  }

  uidAt(seq: number): number | undefined {
    return this.uids[seq - 1];
  }

  /** Message data for a sequence number, or undefined when it was expunged meanwhile. */
  info(seq: number, msgs: readonly MessageInfo[] = this.mailbox.messages()): MessageInfo | undefined {
    const uid = this.uids[seq - 1];
    if (uid === undefined) return undefined;
    const direct = msgs[seq - 1];
    if (direct !== undefined && direct.uid === uid) return direct;
    return findByUid(msgs, uid);
  }

  infoByUid(uid: number, msgs: readonly MessageInfo[] = this.mailbox.messages()): MessageInfo | undefined {
    return findByUid(msgs, uid);
  }

  /** Sequence number of a UID, or 0. */
  seqOf(uid: number): number {
    const i = lowerBound(this.uids, uid);
    return this.uids[i] === uid ? i + 1 : 0;
  }

  get maxUid(): number {
    return this.uids[this.uids.length - 1] ?? 0;
  }
}

export function findByUid(msgs: readonly MessageInfo[], uid: number): MessageInfo | undefined {
  let lo = 0;
  let hi = msgs.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const u = msgs[mid]!.uid;
    if (u === uid) return msgs[mid];
    if (u < uid) lo = mid + 1;
    else hi = mid - 1;
  }
  return undefined;
}

/** A stable text key for a flag list (for "did it change" comparisons). */
export function flagsKey(flags: readonly string[]): string {
  return [...flags]
    .map((f) => f.toLowerCase())
    .sort()
    .join(" ");
}
