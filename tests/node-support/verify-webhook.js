// Verifies one webhook delivery as a receiver would, with the Standard
// Webhooks library from npm. Reads {"secret", "headers", "body"} as JSON on
// stdin; prints "verified" and exits 0, or prints why and exits 1.
"use strict";
const { Webhook } = require("standardwebhooks");

let input = "";
process.stdin.on("data", (chunk) => { input += chunk; });
process.stdin.on("end", () => {
  const { secret, headers, body } = JSON.parse(input);
  try {
    new Webhook(secret).verify(body, headers);
    console.log("verified");
  } catch (e) {
    console.log("refused: " + e.message);
    process.exit(1);
  }
});
