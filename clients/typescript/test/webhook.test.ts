/**
 * verifyWebhook on a real delivery Tether sent (captured by the Rust test):
 * verified under TETHER_WEBHOOK_SECRET as Tether has it, under either
 * secret of a rotation, and refused under any other secret or with the body
 * changed.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { isProviderEvent, verifyWebhook, WebhookVerificationError, type EventPayload } from "@tether/client";
import { env, webhookEnv } from "./env.js";

interface Delivery {
  body: string;
  headers: Record<string, string>;
}

const { delivery, secret } = webhookEnv();
const { body, headers }: Delivery = JSON.parse(readFileSync(delivery, "utf8"));
const secrets = secret.split(" ");

test("a delivery verifies under TETHER_WEBHOOK_SECRET and gives the typed event", () => {
  const event = verifyWebhook(body, headers, secret);
  assert.ok(!isProviderEvent(event), "a connection event");
  const connected: EventPayload = event;
  assert.equal(connected.type, "connected");
  assert.equal(connected.tenant, env.tenant);
  assert.equal(connected.provider, env.provider);
  assert.equal(connected.account?.id, env.account);
  assert.equal(connected.id, headers["webhook-id"]);
});

test("during a rotation, either secret alone verifies it", () => {
  assert.equal(secrets.length, 2, "Tether signs with two secrets");
  for (const one of secrets) {
    assert.equal(verifyWebhook(body, headers, one).id, headers["webhook-id"], one);
    assert.equal(verifyWebhook(Buffer.from(body), new Headers(headers), [one]).id, headers["webhook-id"]);
    const capitalised = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toUpperCase(), v]));
    assert.equal(verifyWebhook(body, capitalised, one).id, headers["webhook-id"]);
  }
});

test("a receiver holding both secrets accepts a delivery signed with either one", () => {
  // Tether signs with each of its secrets, in order: one signature per secret.
  const signatures = (headers["webhook-signature"] ?? "").split(" ");
  assert.equal(signatures.length, 2, "one signature per secret");
  signatures.forEach((signature, i) => {
    const signedOnce = { ...headers, "webhook-signature": signature };
    assert.equal(verifyWebhook(body, signedOnce, secret).id, headers["webhook-id"], `signature ${i}`);
    assert.equal(verifyWebhook(body, signedOnce, secrets).id, headers["webhook-id"], `signature ${i}`);
    // ...and only under the secret that made it.
    assert.throws(() => verifyWebhook(body, signedOnce, secrets[1 - i] ?? ""), WebhookVerificationError);
  });
});

test("another secret, a changed body or a missing header is refused", () => {
  assert.throws(() => verifyWebhook(body, headers, "whsec-some-other-secret"), WebhookVerificationError);
  assert.throws(() => verifyWebhook(body.replace(env.tenant, "mallory"), headers, secret), WebhookVerificationError);
  const { "webhook-signature": _, ...unsigned } = headers;
  assert.throws(() => verifyWebhook(body, unsigned, secret), WebhookVerificationError);
  assert.throws(() => verifyWebhook(body, headers, ""), WebhookVerificationError);
});
