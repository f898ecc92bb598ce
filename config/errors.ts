/**
 * What a config problem looks like, apart from the schema that finds it. Services that only
 * report problems (DNS's zone checks) and the CLI import this, not the schema: a long-running
 * service process never has to load zod (about 8 MB of heap) to name a key path.
 */
export const NAMESPACE = "mailstack";

export interface ConfigProblem {
  /** Key path as written in the stack file, e.g. `mailstack:users[1].name`. */
  path: string;
  message: string;
}

export class ConfigError extends Error {
  constructor(
    readonly problems: ConfigProblem[],
    readonly source = "stack config",
  ) {
    super(`invalid ${source}:\n${problems.map((p) => `  - ${p.path}: ${p.message}`).join("\n")}`);
    this.name = "ConfigError";
  }
}
