/** TOP msg n (RFC 1939 §7): header, blank line and the first n body lines. Sets no flags. */
import { defineCommand } from "../command";
import { encodeResponse, topOf } from "../wire";
import { readMessage } from "./read";

export default defineCommand({
  name: "TOP",
  states: ["TRANSACTION"],
  args: [
    { name: "msg", kind: "msg" },
    { name: "lines", kind: "lines" },
  ],
  async run(s, args) {
    const e = s.message(Number(args.msg));
    const data = await readMessage(s, e); // CRLF line ends already
    await s.send(encodeResponse(topOf(data, Number(args.lines)), false, () => ""));
  },
});
