/** QUIT (RFC 1939 §4, §6): from TRANSACTION it enters UPDATE, where DELE takes effect. */
import { defineCommand } from "../command";

export default defineCommand({
  name: "QUIT",
  states: ["AUTHORIZATION", "TRANSACTION"],
  args: [],
  async run(s) {
    await s.quit();
  },
});
