/** DELE msg (RFC 1939 §5): only marks; the message is removed in the UPDATE state at QUIT. */
import { defineCommand } from "../command";
import { ok } from "../wire";

export default defineCommand({
  name: "DELE",
  states: ["TRANSACTION"],
  args: [{ name: "msg", kind: "msg" }],
  async run(s, args) {
    const e = s.message(Number(args.msg));
    e.deleted = true;
    await s.send(ok(`Message ${e.number} marked to be deleted.`));
  },
});
