/** Every POP3 command, by keyword. The session looks commands up here and checks them generically. */
import type { CommandSpec } from "../command";
import auth from "./auth";
import capa from "./capa";
import dele from "./dele";
import list from "./list";
import noop from "./noop";
import pass from "./pass";
import quit from "./quit";
import retr from "./retr";
import rset from "./rset";
import stat from "./stat";
import stls from "./stls";
import top from "./top";
import uidl from "./uidl";
import user from "./user";

export const COMMANDS: ReadonlyMap<string, CommandSpec> = new Map(
  [user, pass, auth, stat, list, retr, dele, rset, noop, quit, uidl, top, capa, stls].map((c) => [c.name, c]),
);
