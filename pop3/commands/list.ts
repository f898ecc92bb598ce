/** LIST [msg] (RFC 1939 §5): sizes as on the wire (CRLF), from the folder index. */
import { defineCommand } from "../command";
import { multiline, ok } from "../wire";

export default defineCommand({
  name: "LIST",
  states: ["TRANSACTION"],
  args: [{ name: "msg", kind: "msg", optional: true }],
  async run(s, args) {
    if (args.msg !== undefined) {
      const e = s.message(Number(args.msg));
      await s.send(ok(`${e.number} ${e.info.size}`));
      return;
    }
    const { count, size } = s.maildropSummary();
    const lines = s.entries.filter((e) => !e.deleted).map((e) => `${e.number} ${e.info.size}`);
    await s.send(multiline(`${count} messages (${size} octets)`, lines));
  },
});
