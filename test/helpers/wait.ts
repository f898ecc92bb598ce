/** Waiting: sleeps, deadlines and polling, shared by the tests and the benchmark. */

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Resolves true when `p` settles within `ms`, false otherwise; leaves no timer behind. */
export async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p.then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), ms)))]);
  } finally {
    if (timer) clearTimeout(timer);
  }
}

/** Polls `pred` until it returns a truthy value; throws after `timeoutMs` with `what`. */
export async function waitFor<T>(pred: () => T | Promise<T>, what: string, timeoutMs = 20_000, intervalMs = 25): Promise<NonNullable<T>> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await pred();
    if (v) return v as NonNullable<T>;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}
