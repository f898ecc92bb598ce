/** LSUB (RFC 3501 §6.3.9; deprecated by RFC 9051 but still served). Shares LIST's code. */
export { lsub } from "./list";
