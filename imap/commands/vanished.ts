/**
 * UIDs a client knows that are no longer here (QRESYNC VANISHED (EARLIER), RFC 7162 §3.2.5.1,
 * §3.2.6). Expunged UIDs are not kept with their mod-sequences, so every known UID that is gone
 * is reported; the RFC allows reporting UIDs that vanished before the client's mod-sequence.
 */
import { lowerBound, type Range } from "../seqset";

/** Ranges of UIDs inside `known` (and ≤ maxUid) that are not in the ascending `present` list. */
export function missingUids(known: Range[], present: readonly number[], maxUid: number): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  const ranges = known
    .map(
      ([a, b]) =>
        [
          Math.min(a === Infinity ? maxUid : a, b === Infinity ? maxUid : b),
          Math.min(Math.max(a === Infinity ? maxUid : a, b === Infinity ? maxUid : b), maxUid),
        ] as [number, number],
    )
    .filter(([a, b]) => a <= b)
    .sort((x, y) => x[0] - y[0]);
  for (const [a, b] of ranges) {
    let cursor = a;
    let i = lowerBound(present, a);
    while (i < present.length && present[i]! <= b) {
      const u = present[i]!;
      if (u > cursor) out.push([cursor, u - 1]);
      cursor = u + 1;
      i++;
    }
    if (cursor <= b) out.push([cursor, b]);
  }
  // merge overlaps from overlapping known ranges
  const merged: Array<[number, number]> = [];
  for (const r of out) {
    const last = merged[merged.length - 1];
    if (last && r[0] <= last[1] + 1) last[1] = Math.max(last[1], r[1]);
    else merged.push([r[0], r[1]]);
  }
  return merged;
}

export function formatRanges(ranges: Array<[number, number]>): string {
  return ranges.map(([a, b]) => (a === b ? String(a) : `${a}:${b}`)).join(",");
}
