/**
 * The live Tether the tests run against, from the environment (the Rust
 * test tests/api/ts_client.rs sets these; see README.md to run them by hand).
 */

/** A required variable's value; the tests cannot run without it. */
function required(name: string): string {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: these tests run against a live Tether (see clients/typescript/README.md)`);
  }
  return value;
}

export const env = {
  /** Tether's address. */
  url: required("TETHER_URL"),
  /** An API key limited to `tenant`. */
  apiKey: required("TETHER_API_KEY"),
  /** A tenant connected to `provider`, its token past half its life. */
  tenant: required("TETHER_TEST_TENANT"),
  provider: required("TETHER_TEST_PROVIDER"),
  /** The connected account's id. */
  account: required("TETHER_TEST_ACCOUNT"),
};

/** For the webhook tests: a real delivery, and the secrets Tether signed it with. */
export function webhookEnv(): { delivery: string; secret: string } {
  return { delivery: required("TETHER_TEST_WEBHOOK"), secret: required("TETHER_WEBHOOK_SECRET") };
}
