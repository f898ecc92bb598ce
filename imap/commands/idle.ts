/**
 * IDLE (RFC 2177): `+ idling`, then untagged EXISTS/EXPUNGE/FETCH as the selected mailbox
 * changes (the store's watch(): fs.watch with a polling fallback, so mail delivered by SMTP in
 * another process shows up within about a second), until the client sends DONE.
 */
import { ANSWERED, AUTHENTICATED, bad, type CommandSpec } from "../command";

export const idle: CommandSpec = {
  name: "IDLE",
  states: AUTHENTICATED,
  args: [],
  async run(s, _args, tag) {
    s.sendRaw("+ idling\r\n");
    await s.flush();
    const sel = s.selected;
    let running: Promise<void> = Promise.resolve();
    let again = false;
    let busy = false;
    const update = () => {
      if (busy) {
        again = true;
        return;
      }
      busy = true;
      running = (async () => {
        do {
          again = false;
          try {
            if (s.selected === sel && sel) {
              await s.syncSelected(true);
              await s.flush();
            }
          } catch (err) {
            s.log.warn({ err }, "IDLE sync failed");
          }
        } while (again && !s.isClosed);
        busy = false;
      })();
    };
    s.idling = true;
    const unwatch = sel ? sel.mailbox.watch(update) : null;
    // Catch up once now: changes between the last command and the watch starting.
    if (sel) update();
    let line: Buffer | null;
    try {
      line = await s.readRawLine();
    } finally {
      unwatch?.();
      s.idling = false;
    }
    await running;
    if (line === null) return ANSWERED;
    if (line.toString("latin1").trim().toUpperCase() !== "DONE") throw bad("Expected DONE");
    void tag;
    return { status: "OK", text: "IDLE terminated" };
  },
};
