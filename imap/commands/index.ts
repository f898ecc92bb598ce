/** The command registry: name → spec. The session checks state and arguments generically. */
import type { CommandSpec } from "../command";
import { append } from "./append";
import { authenticate } from "./authenticate";
import { capability } from "./capability";
import { check } from "./check";
import { close } from "./close";
import { copy, uidCopy } from "./copy";
import { create } from "./create";
import { del } from "./delete";
import { enable } from "./enable";
import { examine } from "./examine";
import { expunge, uidExpunge } from "./expunge";
import { fetch, uidFetch } from "./fetch";
import { id } from "./id";
import { idle } from "./idle";
import { list } from "./list";
import { login } from "./login";
import { logout } from "./logout";
import { lsub } from "./lsub";
import { move, uidMove } from "./move";
import { namespace } from "./namespace";
import { noop } from "./noop";
import { rename } from "./rename";
import { search, uidSearch } from "./search";
import { select } from "./select";
import { starttls } from "./starttls";
import { status } from "./status";
import { store, uidStore } from "./store";
import { subscribe } from "./subscribe";
import { unselect } from "./unselect";
import { unsubscribe } from "./unsubscribe";

export const ALL_COMMANDS: CommandSpec[] = [
  capability,
  noop,
  logout,
  starttls,
  authenticate,
  login,
  id,
  enable,
  namespace,
  select,
  examine,
  create,
  del,
  rename,
  subscribe,
  unsubscribe,
  list,
  lsub,
  status,
  append,
  idle,
  check,
  close,
  unselect,
  expunge,
  uidExpunge,
  search,
  uidSearch,
  fetch,
  uidFetch,
  store,
  uidStore,
  copy,
  uidCopy,
  move,
  uidMove,
];

export function commandRegistry(): Map<string, CommandSpec> {
  return new Map(ALL_COMMANDS.map((c) => [c.name, c]));
}
