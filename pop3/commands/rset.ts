/** RSET (RFC 1939 §5): unmarks every message marked deleted. */
import { defineCommand } from "../command";
import { ok } from "../wire";

export default defineCommand({
  name: "RSET",
  states: ["TRANSACTION"],
  args: [],
  async run(s) {
    for (const e of s.entries) e.deleted = false;
    const { count, size } = s.maildropSummary();
    await s.send(ok(`${count} messages (${size} octets).`));
  },
});
