/** STAT (RFC 1939 §5): count and size of the messages not marked deleted. */
import { defineCommand } from "../command";
import { ok } from "../wire";

export default defineCommand({
  name: "STAT",
  states: ["TRANSACTION"],
  args: [],
  async run(s) {
    const { count, size } = s.maildropSummary();
    await s.send(ok(`${count} ${size}`));
  },
});
