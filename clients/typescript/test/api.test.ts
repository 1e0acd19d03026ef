/**
 * The client against a live Tether: each method reaches its route, sends
 * what it is given and answers Tether's typed body; errors are TetherErrors
 * with Tether's code. Run in this order (one file: node runs its tests one
 * after another), since the min_ttl test refreshes the token.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Tether, TetherError, type Token } from "@tether/client";
import { env } from "./env.js";

const tether = new Tether({ baseUrl: env.url, apiKey: env.apiKey });

/** The TetherError `promise` rejects with. */
async function refusal(promise: Promise<unknown>): Promise<TetherError> {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof TetherError, `a TetherError, not ${String(e)}`);
    return e;
  }
  assert.fail("expected a TetherError");
}

test("a token is fetched with its typed fields", async () => {
  const token: Token = await tether.token(env.tenant, env.provider, { minTtl: 0 });
  assert.equal(typeof token.access_token, "string");
  assert.ok(token.access_token.length > 0);
  assert.equal(token.token_type, "Bearer");
  assert.equal(token.account.id, env.account);
  assert.ok(Array.isArray(token.scopes));
  assert.equal(typeof token.expires_in, "number");
  const expiresAt = token.expires_at ?? assert.fail("the token expires");
  assert.ok(!Number.isNaN(Date.parse(expiresAt)), expiresAt);
});

test("minTtl is sent as min_ttl: a token expiring sooner is refreshed first", async () => {
  const before = await tether.token(env.tenant, env.provider);
  const again = await tether.token(env.tenant, env.provider, { minTtl: 0 });
  assert.equal(again.access_token, before.access_token, "valid for longer than asked: not refreshed");
  const lives = before.expires_in ?? assert.fail("the token expires");
  // Asking for more than it has left: Tether refreshes it before answering.
  const fresh = await tether.token(env.tenant, env.provider, { minTtl: lives + 600 });
  assert.notEqual(fresh.access_token, before.access_token, "refreshed");
  assert.ok((fresh.expires_in ?? 0) > lives, `${fresh.expires_in} > ${lives}`);
  // Out of range: Tether says so in its own words.
  const err = await refusal(tether.token(env.tenant, env.provider, { minTtl: 86_401 }));
  assert.equal(err.status, 400);
  assert.equal(err.code, "invalid_min_ttl");
});

test("an unknown provider is a TetherError 404 with Tether's code and message", async () => {
  const err = await refusal(tether.token(env.tenant, "no-such-provider"));
  assert.equal(err.status, 404);
  assert.equal(err.code, "not_found");
  assert.ok(err.message.length > 0);
  assert.equal(err.name, "TetherError");
});

test("another tenant is a TetherError 403 for a key limited to one tenant", async () => {
  const err = await refusal(tether.status("some-other-tenant", env.provider));
  assert.equal(err.status, 403);
  assert.equal(err.code, "forbidden");
});

test("a bad key is a TetherError 401", async () => {
  const stranger = new Tether({ baseUrl: env.url, apiKey: "tth_not-a-key" });
  const err = await refusal(stranger.token(env.tenant, env.provider));
  assert.equal(err.status, 401);
});

test("the status names the connected account", async () => {
  const status = await tether.status(env.tenant, env.provider);
  assert.equal(status.provider, env.provider);
  assert.equal(status.status, "connected");
  assert.equal(status.account?.id, env.account);
  const one = await tether.status(env.tenant, env.provider, { account: env.account });
  assert.equal(one.account?.id, env.account);
});

test("lookup finds the tenant holding an account, and null for an account nobody holds", async () => {
  const found = await tether.lookup(env.provider, env.account);
  assert.ok(found, "found");
  assert.equal(found.tenant, env.tenant);
  assert.equal(found.provider, env.provider);
  assert.equal(found.account.id, env.account);
  assert.equal(found.status, "connected");
  assert.equal(await tether.lookup(env.provider, "no-such-account"), null);
  const listed = await tether.findConnections({ status: "connected" });
  assert.ok(listed.connections.some((c) => c.account.id === env.account));
  assert.equal(listed.truncated, false);
});

test("a connect link is created for the lifetime asked, and its page opens", async () => {
  const link = await tether.connectLink(env.tenant, env.provider, {
    expiresIn: 600,
    tags: { conversation: "c-42" },
  });
  assert.equal(link.provider, env.provider);
  assert.ok(link.url.startsWith(env.url), link.url);
  // 600 s, not the default 900 s (a second's leeway for the clock's rounding).
  const expires = Date.parse(link.expires_at) - Date.now();
  assert.ok(expires > 0 && expires <= 601_000, `expires in ${expires} ms`);
  const page = await fetch(link.url);
  assert.equal(page.status, 200);
  const err = await refusal(tether.connectLink(env.tenant, env.provider, { tags: { nested: "x".repeat(300) } }));
  assert.equal(err.status, 400);
  assert.equal(err.code, "invalid_tags");
});

test("a connect session lists its providers and uses, and its page opens for each", async () => {
  const session = await tether.connectSession(env.tenant, {
    providers: [env.provider],
    uses: 3,
    expiresIn: 900,
  });
  assert.deepEqual(session.providers, [env.provider]);
  assert.equal(session.uses, 3);
  const expires = Date.parse(session.expires_at) - Date.now();
  assert.ok(expires > 0 && expires <= 901_000, `expires in ${expires} ms`);
  const page = await fetch(`${env.url}/connect/session/${session.token}/${env.provider}`);
  assert.equal(page.status, 200);
  const err = await refusal(tether.connectSession(env.tenant, { uses: 0 }));
  assert.equal(err.status, 400);
  assert.equal(err.code, "invalid_request");
});

test("a bad baseUrl or an empty key is refused when the client is made, without the key", () => {
  assert.throws(() => new Tether({ baseUrl: "tether.internal", apiKey: env.apiKey }), TypeError);
  assert.throws(() => new Tether({ baseUrl: "ftp://tether.internal", apiKey: env.apiKey }), TypeError);
  assert.throws(() => new Tether({ baseUrl: env.url, apiKey: "" }), /apiKey is empty/);
  try {
    new Tether({ baseUrl: "nowhere", apiKey: env.apiKey });
  } catch (e) {
    assert.ok(!String(e).includes(env.apiKey));
  }
});
