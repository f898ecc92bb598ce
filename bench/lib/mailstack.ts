/**
 * Running mailstack services for the benchmark: the service processes and their stack config come
 * from test/helpers/service-process.ts (the fault tests start them the same way); the benchmark
 * adds users with freshly hashed passwords.
 */
import type { StackUser } from "../../test/helpers/service-process";

export {
  BUILD_DIR,
  buildMailstack,
  type Listener,
  NODE,
  type RunOptions,
  type ServiceName,
  ServiceProcess,
  type StackOptions,
  serviceAvailable,
  stackConfig,
  writeStackConfig,
} from "../../test/helpers/service-process";

export type BenchUser = StackUser;

let hashCache = new Map<string, string>();

/** Users with argon2id hashes (the default mailstack makes); Dovecot gets the same hashes. */
export async function benchUsers(names: string[]): Promise<BenchUser[]> {
  const { hash } = require("@node-rs/argon2") as typeof import("@node-rs/argon2");
  const out: BenchUser[] = [];
  for (const name of names) {
    const password = `${name}-bench-pw`;
    let h = hashCache.get(password);
    if (!h) {
      h = await hash(password, { algorithm: 2, memoryCost: 19456, timeCost: 2, parallelism: 1 });
      hashCache.set(password, h);
    }
    out.push({ name, password, hash: h });
  }
  return out;
}

export function resetHashCache(): void {
  hashCache = new Map();
}
