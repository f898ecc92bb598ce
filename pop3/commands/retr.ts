/** RETR msg (RFC 1939 §5): the message as on disk, CRLF, dot-stuffed, "." terminated. */
import { defineCommand } from "../command";
import { dotStuff, ok } from "../wire";
import { readMessage } from "./read";

export default defineCommand({
  name: "RETR",
  states: ["TRANSACTION"],
  args: [{ name: "msg", kind: "msg" }],
  async run(s, args) {
    const e = s.message(Number(args.msg));
    const data = await readMessage(s, e);
    e.retrieved = true;
    await s.send(Buffer.concat([Buffer.from(ok(`${data.length} octets`)), dotStuff(data)]));
  },
});
