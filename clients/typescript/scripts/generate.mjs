// Regenerates src/schema.d.ts from Tether's OpenAPI document with the pinned
// openapi-typescript, so the client's types are the server's.
//
//   npm run generate                              from $TETHER_URL (default http://127.0.0.1:8080)
//   npm run generate -- path/to/openapi.json      from a saved document
//   npm run generate -- http://host/api/v1/openapi.json [out.d.ts]
//
// The second argument writes elsewhere than src/schema.d.ts (the Rust test
// tests/api/ts_client.rs compares the two). `--empty-objects-unknown`: the
// document's free-form objects (`metadata`, `settings`, `tags`, a relayed
// event's `body`) are `Record<string, unknown>`, not openapi-typescript's
// default `Record<string, never>`, which no value but `{}` fits.
import { execFileSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const base = (process.env.TETHER_URL ?? "http://127.0.0.1:8080").replace(/\/+$/, "");
const source = process.argv[2] ?? `${base}/api/v1/openapi.json`;
const out = process.argv[3] ?? join(root, "src", "schema.d.ts");
const bin = join(root, "node_modules", "openapi-typescript", "bin", "cli.js");

execFileSync(process.execPath, [bin, source, "--empty-objects-unknown", "--output", out], { stdio: "inherit" });
