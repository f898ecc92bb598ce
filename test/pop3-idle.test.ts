/**
 * The autologout timer (RFC 1939 §3) counts from the client's last activity: the session keeps
 * one timer and sets it again for what is left when it fires early (pop3/session.ts touch()).
 */
import { promises as fs } from "node:fs";
import { loginSession, startEnv } from "./pop3-helpers";

test("commands keep a session alive past the idle timeout; quiet, it is closed", async () => {
  const env = await startEnv({ limits: { idleTimeout: 1 } });
  try {
    const c = await loginSession(env.port);
    // 2.4 s of activity, every 0.4 s: longer than the timeout, never idle for it.
    for (let i = 0; i < 6; i++) {
      await new Promise((r) => setTimeout(r, 400));
      expect(await c.cmd("NOOP")).toBe("+OK");
    }
    // Then quiet: the session is closed for inactivity (and nothing else closed it before).
    expect(await c.line()).toBe("-ERR Disconnected for inactivity.");
    await c.closed();
  } finally {
    await env.stop();
    await fs.rm(env.dataDir, { recursive: true, force: true });
  }
});
