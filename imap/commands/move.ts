/** MOVE and UID MOVE (RFC 6851): copy with COPYUID, then expunge the originals. */
import { type CommandSpec, SELECTED } from "../command";
import { copyOrMove } from "./copy";

const moveArgs = [
  { kind: "seqset" as const, name: "sequence set" },
  { kind: "mailbox" as const, name: "mailbox" },
];

export const move: CommandSpec = { name: "MOVE", states: SELECTED, args: moveArgs, run: (s, a) => copyOrMove(s, a, false, true) };
export const uidMove: CommandSpec = { name: "UID MOVE", states: SELECTED, args: moveArgs, run: (s, a) => copyOrMove(s, a, true, true) };
