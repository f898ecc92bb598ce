/**
 * Every shipped stack's program, run under mocks, with every resource it registers fed to every
 * policy of the pack: no violation allowed. The same run with one planted fault shows that the
 * feed is live (a pack that saw nothing would also report nothing).
 */
import { mailstackPolicies } from "../policy/policies";
import { violations } from "./policy-helpers";
import { MockEngine, SHIPPED_STACKS, stackConfigMap, unwrap } from "./pulumi-harness";

async function packViolations(stack: string, config?: Record<string, unknown>) {
  const engine = await MockEngine.start(stack, config ? { config } : {});
  const program = engine.require<{ image: unknown }>("index");
  await engine.value(program.image);
  await engine.settle();
  expect(engine.errors).toEqual([]);
  const found: string[] = [];
  const custom = engine.resources.filter((r) => r.custom);
  for (const r of custom)
    for (const p of mailstackPolicies())
      for (const v of await violations(p, r.type, unwrap(r.inputs))) found.push(`${p.name} ${r.name}: ${v}`);
  return { found, types: new Set(custom.map((r) => r.type)) };
}

test.each(SHIPPED_STACKS)("stack %s passes the policy pack", async (stack) => {
  const { found, types } = await packViolations(stack);
  expect(found).toEqual([]);
  expect(types).toEqual(
    new Set([
      "command:remote:Command",
      "pulumi:providers:docker",
      "docker:index/volume:Volume",
      "docker:index/remoteImage:RemoteImage",
      "docker:index/container:Container",
    ]),
  );
});

test("the same run reports a planted fault (a public network trusted for plaintext logins)", async () => {
  const { found } = await packViolations("lx", {
    ...stackConfigMap("lx"),
    "mailstack:trustedNetworks": ["192.168.25.0/24", "198.51.100.0/24"],
  });
  // SMTP, POP3 and IMAP take logins; DNS and the queue do not.
  expect(found).toEqual([
    expect.stringMatching(
      /^mailstack-plaintext-auth-tls-or-trust mailstack-smtp-container: trustedNetworks entry 198\.51\.100\.0\/24 is public/,
    ),
    expect.stringMatching(/^mailstack-plaintext-auth-tls-or-trust mailstack-pop3-container: /),
    expect.stringMatching(/^mailstack-plaintext-auth-tls-or-trust mailstack-imap-container: /),
  ]);
});
