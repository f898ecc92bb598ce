/** Process memory from /proc: the module lives with the test helpers, which start services too. */
export * from "../../test/helpers/procmem";
