/**
 * Runs mailstack's Pulumi code against `pulumi.runtime.setMocks` and records every resource the
 * way the engine would receive it: type token, name, inputs (secrets still marked), parent and
 * the dependency URNs the engine orders by. Unmocked resource types and every provider call fail.
 *
 * Each `MockEngine.start` gives a fresh module registry (jest.resetModules) and a fresh Pulumi
 * runtime state, so several stacks can run in one test file. After start, require the code under
 * test with `engine.require`, never with a top-level import.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import * as path from "node:path";
import { parse as parseYaml } from "yaml";

export const SECRET_SIG_KEY = "4dabf18193072939515e22adb298388d";
export const SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270";

export interface Recorded {
  type: string;
  name: string;
  custom: boolean;
  /** As the engine receives them: secrets are `{ [SECRET_SIG_KEY]: SECRET_SIG, value }`. */
  inputs: Record<string, unknown>;
  urn: string;
  parent: string;
  /** URNs this resource waits for (dependsOn and input dependencies). */
  dependencies: string[];
  provider: string;
}

/** The resource types mailstack may create, and what their mocks return beyond the inputs. */
const MOCKED_TYPES: Record<string, (inputs: Record<string, unknown>, name: string) => Record<string, unknown>> = {
  "command:remote:Command": () => ({ stdout: "", stderr: "" }),
  "docker:index/container:Container": () => ({ exitCode: null }),
  "docker:index/volume:Volume": (inputs) => ({ mountpoint: `/var/lib/docker/volumes/${String(inputs.name)}/_data` }),
  // An image id is a content hash of what was built or pulled: here, of the inputs.
  "docker:index/remoteImage:RemoteImage": (inputs) => ({
    imageId: `sha256:${createHash("sha256").update(JSON.stringify(inputs)).digest("hex")}`,
  }),
  "pulumi:providers:docker": () => ({}),
  "pulumi:providers:command": () => ({}),
};
const COMPONENT_PREFIX = "mailstack:index:";

export function isSecret(v: unknown): v is { value: unknown } {
  return typeof v === "object" && v !== null && (v as Record<string, unknown>)[SECRET_SIG_KEY] === SECRET_SIG;
}

/** The value with every secret marker removed. */
export function unwrap<T = unknown>(v: unknown): T {
  if (isSecret(v)) return unwrap(v.value);
  if (Array.isArray(v)) return v.map((x) => unwrap(x)) as T;
  if (typeof v === "object" && v !== null) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, unwrap(x)])) as T;
  return v as T;
}

/** Every string in `v` that is not inside a secret, with its path. */
export function plainStrings(v: unknown, at = ""): Array<{ path: string; value: string }> {
  if (isSecret(v)) return [];
  if (typeof v === "string") return [{ path: at, value: v }];
  if (Array.isArray(v)) return v.flatMap((x, i) => plainStrings(x, `${at}[${i}]`));
  if (typeof v === "object" && v !== null) return Object.entries(v).flatMap(([k, x]) => plainStrings(x, at ? `${at}.${k}` : k));
  return [];
}

/** A stack file's `config:` map as Pulumi hands it to a program: every value a string. */
export function pulumiConfigOf(configMap: Record<string, unknown>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(configMap)) out[k] = typeof v === "string" ? v : JSON.stringify(v);
  return out;
}

export const REPO = path.resolve(__dirname, "..");
export const SHIPPED_STACKS = ["lx", "sina", "sohu", "dev"] as const;

export function stackConfigMap(stack: string): Record<string, unknown> {
  const doc = parseYaml(readFileSync(path.join(REPO, "stacks", `Pulumi.${stack}.yaml`), "utf8")) as { config: Record<string, unknown> };
  return doc.config;
}

export interface StartOptions {
  /** The `config:` map (default: the stack file's). */
  config?: Record<string, unknown>;
  /** Keys Pulumi would mark secret (`mailstack:users`, ...). */
  secretKeys?: string[];
  preview?: boolean;
}

const engines: MockEngine[] = [];

// Any engine with errors fails the test that saw them, whether or not the test looks.
afterEach(() => {
  const failing = engines.filter((e) => !e.expectErrors && e.errors.length > 0);
  if (failing.length > 0) throw new Error(`mock engine errors:\n${failing.flatMap((e) => e.errors).join("\n")}`);
});

export class MockEngine {
  readonly resources: Recorded[] = [];
  /** What each component passed to `registerOutputs`, by URN, as the engine receives it (secrets marked). */
  readonly componentOutputs = new Map<string, Record<string, unknown>>();
  /** Unmocked types, calls, and registration failures. A passing test has none. */
  readonly errors: string[] = [];
  /** Set by a test that provokes errors on purpose. */
  expectErrors = false;
  pulumi!: typeof import("@pulumi/pulumi");
  private settings!: { getMonitor(): unknown; waitForRPCs(): Promise<void> };

  private constructor(readonly stack: string) {}

  static async start(stack: string, opts: StartOptions = {}): Promise<MockEngine> {
    const engine = new MockEngine(stack);
    engines.push(engine);
    jest.resetModules();
    delete (global as Record<string, unknown>).globalStore;
    // Every fresh copy of @pulumi/pulumi adds its own process exit listeners.
    process.setMaxListeners(Math.max(process.getMaxListeners(), 100));
    engine.pulumi = require("@pulumi/pulumi");
    engine.settings = require("@pulumi/pulumi/runtime/settings");
    const pending = new Map<string, Omit<Recorded, "inputs">>();
    await engine.pulumi.runtime.setMocks(
      {
        newResource: (args) => {
          const key = `${args.type}::${args.name}`;
          const meta = pending.get(key);
          const record: Recorded = {
            type: args.type,
            name: args.name,
            custom: args.custom ?? true,
            inputs: args.inputs,
            urn: meta?.urn ?? "",
            parent: meta?.parent ?? "",
            dependencies: meta?.dependencies ?? [],
            provider: meta?.provider ?? args.provider ?? "",
          };
          engine.resources.push(record);
          if (args.type.startsWith(COMPONENT_PREFIX) && args.custom === false) return { id: undefined, state: {} };
          const extra = MOCKED_TYPES[args.type];
          if (!extra) {
            // Recorded, and the test fails in afterEach. Throwing here instead would surface as an
            // unhandled rejection inside the SDK and kill the whole test file without a report.
            engine.errors.push(`unmocked resource type ${args.type} (${args.name})`);
            return { id: undefined, state: {} };
          }
          return { id: `${args.name}-id`, state: { ...args.inputs, ...extra(args.inputs, args.name) } };
        },
        call: (args) => {
          engine.errors.push(`unmocked call ${args.token}`);
          throw new Error(`unmocked call ${args.token}`);
        },
      },
      "mailstack",
      stack,
      opts.preview ?? false,
    );
    // Record what the mocks' newResource does not see: parent and dependency URNs.
    const monitor = engine.settings.getMonitor() as {
      registerResource(req: RegisterRequest, cb: (err: unknown, res: unknown) => void): Promise<void>;
    };
    const original = monitor.registerResource.bind(monitor);
    const monitorOutputs = monitor as unknown as {
      registerResourceOutputs(
        req: { getUrn(): string; getOutputs(): { toJavaScript(): Record<string, unknown> } | undefined },
        cb: (err: unknown, res: unknown) => void,
      ): void;
    };
    const originalOutputs = monitorOutputs.registerResourceOutputs.bind(monitor);
    monitorOutputs.registerResourceOutputs = (req, cb) => {
      engine.componentOutputs.set(req.getUrn(), req.getOutputs()?.toJavaScript() ?? {});
      return originalOutputs(req, cb);
    };
    monitor.registerResource = (req, cb) => {
      const type = req.getType();
      const name = req.getName();
      const parent = req.getParent();
      const qualified = parent ? `${parent.split("::")[2]!.split("$").pop()}$${type}` : type;
      pending.set(`${type}::${name}`, {
        type,
        name,
        custom: req.getCustom(),
        urn: `urn:pulumi:${stack}::mailstack::${qualified}::${name}`,
        parent,
        dependencies: req.getDependenciesList(),
        provider: req.getProvider(),
      });
      return original(req, (err, res) => {
        if (err) engine.errors.push(`registering ${type} ${name}: ${String((err as Error).message ?? err)}`);
        cb(err, res);
      });
    };
    const config = opts.config ?? stackConfigMap(stack);
    engine.pulumi.runtime.setAllConfig(pulumiConfigOf(config), opts.secretKeys ?? []);
    return engine;
  }

  /** Requires a module in this engine's registry (so it shares its Pulumi runtime). */
  require<T>(modulePath: string): T {
    return require(path.isAbsolute(modulePath) ? modulePath : path.join(REPO, modulePath)) as T;
  }

  /** Waits until every registration the program started has reached the mocks. */
  async settle(): Promise<void> {
    for (let i = 0; i < 5; i++) {
      await this.settings.waitForRPCs();
      await new Promise((r) => setImmediate(r));
    }
  }

  /**
   * A program's exports as the engine would store them as stack outputs: serialized by the SDK,
   * so secrets stay marked (`isSecret`) and everything else is plain.
   */
  async stackOutputs(exports: Record<string, unknown>): Promise<Record<string, unknown>> {
    const rpc = require("@pulumi/pulumi/runtime/rpc") as {
      serializeProperties(label: string, props: Record<string, unknown>): Promise<Record<string, unknown>>;
    };
    return rpc.serializeProperties("stack outputs", exports);
  }

  /** The value of an Output (or a plain value). */
  value<T>(o: unknown): Promise<T> {
    return new Promise<T>((resolve) => {
      (this.pulumi.output(o as string) as import("@pulumi/pulumi").Output<unknown>).apply((v) => {
        resolve(v as T);
        return v;
      });
    });
  }

  ofType(type: string): Recorded[] {
    return this.resources.filter((r) => r.type === type);
  }

  named(name: string): Recorded {
    const r = this.resources.find((x) => x.name === name);
    if (!r) throw new Error(`no resource named ${name}; have ${this.resources.map((x) => x.name).join(", ")}`);
    return r;
  }
}

interface RegisterRequest {
  getType(): string;
  getName(): string;
  getParent(): string;
  getCustom(): boolean;
  getDependenciesList(): string[];
  getProvider(): string;
}

/** A resource's type token without its parent chain. */
export function urnType(urn: string): string {
  return urn.split("::")[2]!.split("$").pop()!;
}
