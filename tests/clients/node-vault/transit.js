// node-vault against a server: VAULT_ADDR and VAULT_TOKEN from the environment, a key name as the argument.
// Prints one JSON document of what each call answered; tests/test_vault_clients.py checks it.
const vault = require("node-vault")({ apiVersion: "v1", endpoint: process.env.VAULT_ADDR, token: process.env.VAULT_TOKEN });

async function main(key) {
  const plaintext = Buffer.from("node-vault says hello").toString("base64");
  const out = {};
  out.initialized = await vault.initialized();
  out.status = await vault.status();
  out.health = await vault.health();
  await vault.write(`transit/keys/${key}`, { type: "chacha20-poly1305" });
  const encrypted = await vault.write(`transit/encrypt/${key}`, { plaintext });
  out.ciphertext = encrypted.data.ciphertext;
  const decrypted = await vault.write(`transit/decrypt/${key}`, { ciphertext: out.ciphertext });
  out.roundtrip = decrypted.data.plaintext === plaintext;
  out.listed = (await vault.list("transit/keys")).data.keys;
  out.lookup = (await vault.tokenLookupSelf()).data.policies;
  try {
    await vault.write(`transit/decrypt/${key}`, { ciphertext: "vault:v1:AAAA" });
  } catch (error) {
    out.error = { status: error.response.statusCode, body: error.response.body };
  }
  process.stdout.write(JSON.stringify(out));
}

main(process.argv[2]).catch((error) => {
  process.stderr.write(`${error.stack}\n`);
  process.exit(1);
});
