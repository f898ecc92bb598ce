/** Sequence-set arguments resolved against the session's view (RFC 3501 §9, RFC 5182 `$`). */
import { bad } from "./command";
import type { Token } from "./parser";
import { parseSeqSet, resolveSeq, resolveUids } from "./seqset";
import type { Session } from "./session";
import type { SelectedView } from "./view";

/** Ascending sequence numbers named by a set argument. */
export function resolveSet(s: Session, sel: SelectedView, t: Token, byUid: boolean): number[] {
  if (t.type !== "atom") throw bad("Invalid sequence set");
  const set = parseSeqSet(t.value);
  if (set === null) throw bad("Invalid sequence set");
  if (set === "$") {
    // The saved result is a set of UIDs whatever command names it.
    const seqs = s.savedSearch.map((u) => sel.seqOf(u)).filter((n) => n > 0);
    return seqs.sort((a, b) => a - b);
  }
  if (byUid) return resolveUids(set, sel.uids);
  const seqs = resolveSeq(set, sel.count);
  if (seqs === null) throw bad("Invalid message sequence number");
  return seqs;
}
