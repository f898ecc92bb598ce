/**
 * RETR msg (RFC 1939 §5): the message as on disk, CRLF, dot-stuffed, "." terminated. Reading,
 * streaming and the read-ahead of the next message are in retrieve.ts.
 */
import { defineCommand } from "../command";
import { prepareNext, retrieve } from "../retrieve";

export default defineCommand({
  name: "RETR",
  states: ["TRANSACTION"],
  args: [{ name: "msg", kind: "msg" }],
  async run(s, args) {
    const e = s.message(Number(args.msg));
    await retrieve(s, e);
    // While the client reads this one, the next is made ready (clients fetch in order).
    prepareNext(s, e.number + 1);
  },
});
