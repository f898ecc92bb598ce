/**
 * The policy pack as the Pulumi CLI runs it: policy/index.ts started as its own process (the
 * PolicyPack gRPC analyzer server), then asked to Analyze every resource of the lx stack's
 * program, with properties serialized as the engine sends them (secrets still wrapped). No
 * diagnostics allowed; a planted open relay must get one. Needs `npm ci` in policy/.
 */
import { type ChildProcess, spawn } from "node:child_process";
import * as path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { MockEngine, REPO, type Recorded, stackConfigMap } from "./pulumi-harness";

// The engine's own protocol definitions, from the SDK.
const analyzerPb = require("@pulumi/pulumi/proto/analyzer_pb");
const analyzerGrpc = require("@pulumi/pulumi/proto/analyzer_grpc_pb");
const structPb = require("google-protobuf/google/protobuf/struct_pb");

let pack: ChildProcess;
let client: grpc.Client & Record<string, (...a: unknown[]) => unknown>;

beforeAll(async () => {
  pack = spawn(path.join(REPO, "node_modules/.bin/node"), ["-r", "ts-node/register/transpile-only", "index.ts"], {
    cwd: path.join(REPO, "policy"),
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, TS_NODE_PROJECT: path.join(REPO, "policy/tsconfig.json") },
  });
  let stderr = "";
  pack.stderr!.on("data", (d) => {
    stderr += String(d);
  });
  let timer: NodeJS.Timeout | undefined;
  const port = await new Promise<number>((resolve, reject) => {
    let out = "";
    pack.stdout!.on("data", (d) => {
      out += String(d);
      const m = /^(\d+)\s*$/m.exec(out);
      if (m) resolve(Number(m[1]));
    });
    pack.once("exit", (code) => reject(new Error(`policy pack exited with ${code}: ${stderr}`)));
    timer = setTimeout(() => reject(new Error(`policy pack did not print its port: ${stderr}`)), 30_000);
  }).finally(() => clearTimeout(timer));
  const Client = grpc.makeGenericClientConstructor(analyzerGrpc.AnalyzerService, "Analyzer");
  client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as typeof client;
}, 40_000);

afterAll(async () => {
  client?.close();
  if (pack?.pid !== undefined && pack.exitCode === null) {
    const exited = new Promise((r) => pack.once("exit", r));
    pack.kill("SIGTERM");
    await exited;
  }
});

function call<T>(method: string, req: unknown): Promise<T> {
  return new Promise((resolve, reject) => client[method]!(req, (err: Error | null, res: T) => (err ? reject(err) : resolve(res))));
}

interface Diagnostic {
  policy: string;
  message: string;
  level: number;
}

async function analyze(r: Recorded): Promise<Diagnostic[]> {
  const req = new analyzerPb.AnalyzeRequest();
  req.setType(r.type);
  req.setName(r.name);
  req.setUrn(r.urn);
  req.setProperties(structPb.Struct.fromJavaScript(JSON.parse(JSON.stringify(r.inputs))));
  req.setOptions(new analyzerPb.AnalyzerResourceOptions());
  const res = await call<{ getDiagnosticsList(): Array<{ getPolicyname(): string; getMessage(): string; getEnforcementlevel(): number }> }>(
    "analyze",
    req,
  );
  return res.getDiagnosticsList().map((d) => ({ policy: d.getPolicyname(), message: d.getMessage(), level: d.getEnforcementlevel() }));
}

async function stackResources(config?: Record<string, unknown>): Promise<Recorded[]> {
  const engine = await MockEngine.start("lx", config ? { config } : {});
  await engine.value(engine.require<{ image: unknown }>("index").image);
  await engine.settle();
  return engine.resources.filter((r) => r.custom);
}

test("the pack describes its seven policies to the engine", async () => {
  const info = await call<{ getPoliciesList(): Array<{ getName(): string }>; getName(): string }>(
    "getAnalyzerInfo",
    new (require("google-protobuf/google/protobuf/empty_pb").Empty)(),
  );
  expect(info.getName()).toBe("mailstack");
  expect(info.getPoliciesList().map((p) => p.getName())).toHaveLength(7);
});

test("every resource of the lx stack passes, secrets and all", async () => {
  const resources = await stackResources();
  expect(resources.filter((r) => r.type === "docker:index/container:Container")).toHaveLength(5);
  for (const r of resources) expect({ name: r.name, diagnostics: await analyze(r) }).toEqual({ name: r.name, diagnostics: [] });
});

test("a container whose (secret) config trusts the Docker bridge is reported", async () => {
  const resources = await stackResources({ ...stackConfigMap("lx"), "mailstack:trustedNetworks": ["192.168.25.0/24", "172.17.0.0/16"] });
  const smtp = resources.find((r) => r.name === "mailstack-smtp-container")!;
  expect(await analyze(smtp)).toEqual([
    expect.objectContaining({
      policy: "mailstack-no-open-relay-trust",
      message: expect.stringContaining("overlaps the Docker bridge 172.17.0.0/16"),
    }),
  ]);
});
