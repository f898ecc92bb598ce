/** Hand-built ResourceValidationArgs for the policy tests (no Pulumi engine, no PolicyPack server). */
// The pack's own @pulumi/policy (policy/node_modules), through the module that uses it.
import type { ResourceValidationArgs, ResourceValidationPolicy } from "../policy/policies";

export function validationArgs(
  type: string,
  props: Record<string, unknown>,
  name = "res",
  config: Record<string, unknown> = {},
): ResourceValidationArgs {
  return {
    type,
    props,
    urn: `urn:pulumi:test::mailstack::${type}::${name}`,
    name,
    opts: {
      protect: false,
      ignoreChanges: [],
      aliases: [],
      customTimeouts: { createSeconds: 0, updateSeconds: 0, deleteSeconds: 0 },
      additionalSecretOutputs: [],
    },
    stackTags: new Map(),
    isType: () => false,
    asType: () => undefined,
    getConfig: <T extends object>() => config as T,
    notApplicable: (reason?: string): never => {
      throw new Error(`not applicable: ${reason ?? ""}`);
    },
  } as ResourceValidationArgs;
}

/** Every violation the policy reports for one resource. */
export async function violations(
  policy: ResourceValidationPolicy,
  type: string,
  props: Record<string, unknown>,
  config: Record<string, unknown> = {},
): Promise<string[]> {
  const found: string[] = [];
  const fns = Array.isArray(policy.validateResource) ? policy.validateResource : policy.validateResource ? [policy.validateResource] : [];
  if (fns.length === 0) throw new Error(`${policy.name} has no validateResource`);
  for (const fn of fns) await fn(validationArgs(type, props, "res", config), (message) => found.push(message));
  return found;
}
