/**
 * Sequence sets (RFC 3501 §9 sequence-set, RFC 9051 adds `$` from SEARCHRES, RFC 5182).
 * Parsed once into ranges, then resolved against the session's view of the mailbox.
 */

/** `*` is represented as Infinity until resolved. */
export type Range = [number, number];

/** Parses `1:3,5,7:*` (or `$`). Returns null when it is not a sequence set. */
export function parseSeqSet(text: string): Range[] | "$" | null {
  if (text === "$") return "$";
  if (text.length === 0) return null;
  const out: Range[] = [];
  for (const part of text.split(",")) {
    const m = /^(\d+|\*)(?::(\d+|\*))?$/.exec(part);
    if (!m) return null;
    const a = m[1] === "*" ? Infinity : Number(m[1]);
    const b = m[2] === undefined ? a : m[2] === "*" ? Infinity : Number(m[2]);
    // nz-number: 1..4294967295
    if (a === 0 || b === 0 || (a !== Infinity && a > 4294967295) || (b !== Infinity && b > 4294967295)) return null;
    out.push(a <= b ? [a, b] : [b, a]);
  }
  return out;
}

/** Largest index < n with arr[index] < x, plus one (lower bound) in an ascending array. */
export function lowerBound(arr: ArrayLike<number>, x: number): number {
  let lo = 0;
  let hi = arr.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (arr[mid]! < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * Resolves message sequence number ranges against `count` messages. Returns ascending sequence
 * numbers, or null when a number is out of range (`*` on an empty mailbox resolves to nothing).
 */
export function resolveSeq(ranges: Range[], count: number): number[] | null {
  if (count === 0) return ranges.every(([a, b]) => a === Infinity || b === Infinity) ? [] : null;
  const marks = new Uint8Array(count + 1);
  for (const [ra, rb] of ranges) {
    const a = ra === Infinity ? count : ra;
    const b = rb === Infinity ? count : rb;
    const lo = Math.min(a, b);
    const hi = Math.max(a, b);
    if (hi > count) return null;
    marks.fill(1, lo, hi + 1);
  }
  const out: number[] = [];
  for (let i = 1; i <= count; i++) if (marks[i]) out.push(i);
  return out;
}

/**
 * Resolves UID ranges against the ascending UID list of the view. Returns ascending sequence
 * numbers of the messages that exist. `*` is the largest UID in use (RFC 3501 §6.4.8).
 */
export function resolveUids(ranges: Range[], uids: ArrayLike<number>): number[] {
  const n = uids.length;
  if (n === 0) return [];
  const maxUid = uids[n - 1]!;
  if (ranges.length === 1) {
    const r = ranges[0]!;
    const a = Math.min(r[0] === Infinity ? maxUid : r[0], r[1] === Infinity ? maxUid : r[1]);
    const b = Math.max(r[0] === Infinity ? maxUid : r[0], r[1] === Infinity ? maxUid : r[1]);
    const lo = lowerBound(uids, a);
    const hi = lowerBound(uids, b + 1);
    const out = new Array<number>(Math.max(0, hi - lo));
    for (let i = lo; i < hi; i++) out[i - lo] = i + 1;
    return out;
  }
  const marks = new Uint8Array(n);
  let any = false;
  for (const [ra, rb] of ranges) {
    const x = ra === Infinity ? maxUid : ra;
    const y = rb === Infinity ? maxUid : rb;
    const lo = lowerBound(uids, Math.min(x, y));
    const hi = lowerBound(uids, Math.max(x, y) + 1);
    if (hi > lo) {
      marks.fill(1, lo, hi);
      any = true;
    }
  }
  if (!any) return [];
  const out: number[] = [];
  for (let i = 0; i < n; i++) if (marks[i]) out.push(i + 1);
  return out;
}

/** Expands UID ranges into a Set-like membership test (for search keys and QRESYNC known-uids). */
export function uidMatcher(ranges: Range[], maxUid: number): (uid: number) => boolean {
  const rs = ranges.map(([a, b]) => {
    const x = a === Infinity ? maxUid : a;
    const y = b === Infinity ? maxUid : b;
    return [Math.min(x, y), Math.max(x, y)] as const;
  });
  return (uid) => rs.some(([a, b]) => uid >= a && uid <= b);
}

/** Compact form of a set of numbers: `1:3,5,9:10`. Sorts a copy; empty input gives "". */
export function formatSeqSet(nums: Iterable<number>, sorted = false): string {
  const arr = sorted ? (nums as number[]) : [...nums].sort((a, b) => a - b);
  const parts: string[] = [];
  let i = 0;
  while (i < arr.length) {
    const start = arr[i]!;
    let end = start;
    while (i + 1 < arr.length && (arr[i + 1] === end + 1 || arr[i + 1] === end)) end = arr[++i]!;
    parts.push(start === end ? String(start) : `${start}:${end}`);
    i++;
  }
  return parts.join(",");
}

/** Same as formatSeqSet, but keeps the given order (COPYUID source/destination pairs must align). */
export function formatOrderedSet(nums: number[]): string {
  const parts: string[] = [];
  let i = 0;
  while (i < nums.length) {
    const start = nums[i]!;
    let end = start;
    while (i + 1 < nums.length && nums[i + 1] === end + 1) end = nums[++i]!;
    parts.push(start === end ? String(start) : `${start}:${end}`);
    i++;
  }
  return parts.join(",");
}
