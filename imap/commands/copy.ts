/**
 * COPY and UID COPY (RFC 3501 §6.4.7) with COPYUID (RFC 4315 §3); MOVE and UID MOVE (RFC 6851)
 * share the code: copy, send COPYUID untagged, then expunge the sources and report them.
 * COPY that does not fit in the user's quota is NO [OVERQUOTA]; MOVE never grows usage.
 */

import type { Reservation } from "../../store/quota";
import type { Mailbox } from "../../store/types";
import { type CommandSpec, no, type Result, SELECTED } from "../command";
import { checkName } from "../names";
import type { Token } from "../parser";
import { formatOrderedSet } from "../seqset";
import type { Session } from "../session";
import { resolveSet } from "../sets";
import { reserveQuota } from "./append";

export async function copyOrMove(s: Session, args: Token[], byUid: boolean, move: boolean): Promise<Result> {
  const sel = s.selected!;
  const dest = s.mailboxArg(args[1]!);
  if (dest !== "INBOX") checkName(dest);
  if (move && sel.readOnly) throw no("Mailbox is read-only", "READ-ONLY");
  const seqs = resolveSet(s, sel, args[0]!, byUid);
  const msgs = sel.mailbox.messages();
  const uids: number[] = [];
  let expunged = false;
  for (const seq of seqs) {
    const info = sel.info(seq, msgs);
    if (info) uids.push(info.uid);
    else expunged = true;
  }
  if (expunged && !byUid) throw no("Some of the messages no longer exist", "EXPUNGEISSUED");
  const name = move ? "MOVE" : "COPY";
  let target: Mailbox;
  try {
    target = await s.store.open(s.user!, dest);
  } catch (err) {
    if ((err as Error).name === "NoSuchFolderError") throw no("Mailbox does not exist", "TRYCREATE");
    throw err;
  }
  try {
    if (uids.length === 0) return { status: "OK", text: `${name} completed (no messages)` };
    // COPY adds the copies to the user's quota; MOVE does not grow it (the originals go), so it
    // is never refused for quota, as Dovecot does within one quota root: a client's "delete" is
    // often MOVE to Trash, which an over-quota user needs most.
    let reservation: Reservation | null = null;
    if (!move) {
      let bytes = 0;
      const byUidInfo = new Map(msgs.map((m) => [m.uid, m.size]));
      for (const u of uids) bytes += byUidInfo.get(u) ?? 0;
      reservation = await reserveQuota(s, bytes);
    }
    let map: Map<number, number>;
    try {
      map = await sel.mailbox.copyTo(uids, target);
    } catch (err) {
      reservation?.release();
      throw err;
    }
    reservation?.commit();
    const src = [...map.keys()].sort((a, b) => a - b);
    const dst = src.map((u) => map.get(u)!);
    const code = { name: "COPYUID", args: [target.uidValidity, formatOrderedSet(src), formatOrderedSet(dst)] };
    if (!move) return { status: "OK", code, text: `${byUid ? "UID " : ""}COPY completed` };
    s.send({ tag: "*", command: "OK", code, text: "Moved" });
    const removed = await sel.mailbox.expunge(src);
    s.announceExpunged(sel, removed);
    return { status: "OK", text: `${byUid ? "UID " : ""}MOVE completed` };
  } finally {
    await target.close();
  }
}

const copyArgs = [
  { kind: "seqset" as const, name: "sequence set" },
  { kind: "mailbox" as const, name: "mailbox" },
];

export const copy: CommandSpec = { name: "COPY", states: SELECTED, args: copyArgs, run: (s, a) => copyOrMove(s, a, false, false) };
export const uidCopy: CommandSpec = { name: "UID COPY", states: SELECTED, args: copyArgs, run: (s, a) => copyOrMove(s, a, true, false) };
