/**
 * CLOSE (RFC 3501 §6.4.2): expunges \Deleted messages silently (read-write only) and leaves the
 * selected state.
 */
import { type CommandSpec, SELECTED } from "../command";

export const close: CommandSpec = {
  name: "CLOSE",
  states: SELECTED,
  args: [],
  async run(s) {
    const sel = s.selected!;
    if (!sel.readOnly) {
      const deleted = sel.mailbox
        .messages()
        .filter((m) => m.flags.includes("\\Deleted"))
        .map((m) => m.uid);
      if (deleted.length > 0) await sel.mailbox.expunge(deleted).catch(() => undefined);
    }
    await s.unselect(false);
  },
};
