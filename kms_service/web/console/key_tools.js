// The key tools: encrypt, decrypt, rewrap, datakey, sign, verify, hmac, export. Outputs are copyable;
// plaintexts and key material stay off the page until shown (once); all are cleared on leaving the page.
import { allows, fromBase64, get, post, toBase64 } from "./api.js";
import { clearOutputs, errorText, field, h, hiddenBecause, notice, output, secret, uid } from "./ui.js";

function tool(title, controls, run) {
  const id = uid("tool");
  const out = h("div", { class: "tool-output", "aria-live": "polite" });
  const form = h("form", { class: "tool", "aria-labelledby": id },
    h("h3", { id }, title), ...controls, h("button", { type: "submit" }, title), out);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearOutputs(out);
    out.replaceChildren(notice("info", "Working…"));
    try {
      out.replaceChildren(...[await run()].flat());
    } catch (e) {
      out.replaceChildren(notice("error", errorText(e)));
    }
  });
  return form;
}

const textInput = (rows = 2) => h("textarea", { rows, spellcheck: "false", autocomplete: "off" });

export function renderTools(container, mount, name, key, paths, caps) {
  const can = (path) => allows(caps[path], "update");
  const grid = h("div", { class: "tools" });
  container.append(grid);
  const add = (path, make) => grid.append(can(path) ? make() : hiddenBecause(path, "update"));
  const context = key.derived ? h("input", { type: "text", autocomplete: "off" }) : null;
  const ctx = () => (context && context.value ? { context: toBase64(context.value) } : {});
  if (context) container.prepend(field("Context (derived key)", context, "text; sent as base64"));

  if (key.supports_encryption) {
    add(paths.encrypt, () => {
      const plaintext = textInput();
      return tool("Encrypt", [field("Plaintext", plaintext, "text; sent as base64")], async () => {
        const data = (await post(paths.encrypt, { plaintext: toBase64(plaintext.value), ...ctx() })).data;
        return output("Ciphertext", data.ciphertext);
      });
    });
  }
  if (key.supports_decryption) {
    add(paths.decrypt, () => {
      const ciphertext = textInput();
      return tool("Decrypt", [field("Ciphertext", ciphertext)], async () => {
        const data = (await post(paths.decrypt, { ciphertext: ciphertext.value.trim(), ...ctx() })).data;
        return secret("plaintext", fromBase64(data.plaintext));
      });
    });
  }
  if (key.supports_encryption) {
    add(paths.rewrap, () => {
      const ciphertext = textInput();
      return tool("Rewrap", [field("Ciphertext to rewrap", ciphertext, "to the latest version")], async () => {
        const data = (await post(paths.rewrap, { ciphertext: ciphertext.value.trim(), ...ctx() })).data;
        return output("Rewrapped ciphertext", data.ciphertext);
      });
    });
    add(paths.datakey, () => {
      const kind = h("select", {}, h("option", { value: "wrapped" }, "wrapped (ciphertext only)"),
        h("option", { value: "plaintext" }, "plaintext and ciphertext"));
      const bits = h("select", {}, ["256", "128", "512"].map((b) => h("option", { value: b }, b)));
      return tool("Data key", [field("Kind", kind), field("Bits", bits)], async () => {
        const path = `${mount}/datakey/${kind.value}/${name}`;
        const data = (await post(path, { bits: Number(bits.value), ...ctx() })).data;
        const parts = [output("Data key ciphertext", data.ciphertext)];
        if (data.plaintext) parts.push(secret("data key (base64)", data.plaintext));
        return parts;
      });
    });
  }
  if (key.supports_signing) {
    add(paths.sign, () => {
      const input = textInput();
      return tool("Sign", [field("Input", input, "text; sent as base64")], async () => {
        const data = (await post(paths.sign, { input: toBase64(input.value), ...ctx() })).data;
        return output("Signature", data.signature);
      });
    });
    add(paths.verify, () => {
      const input = textInput();
      const signature = textInput();
      return tool("Verify", [field("Input", input, "text; sent as base64"), field("Signature", signature)], async () => {
        const data = (await post(paths.verify, { input: toBase64(input.value), signature: signature.value.trim(), ...ctx() })).data;
        return h("p", { class: data.valid ? "notice ok" : "notice error", "data-valid": String(data.valid) },
          data.valid ? "Valid signature" : "Not valid");
      });
    });
  }
  add(paths.hmac, () => {
    const input = textInput();
    return tool("HMAC", [field("Input", input, "text; sent as base64")], async () => {
      const data = (await post(paths.hmac, { input: toBase64(input.value) })).data;
      return output("HMAC", data.hmac);
    });
  });
  if (key.exportable) {
    const exportPath = (type) => `${mount}/export/${type}/${name}`;
    const types = [];
    if (key.supports_encryption) types.push("encryption-key");
    if (key.supports_signing) types.push("signing-key", "public-key");
    types.push("hmac-key");
    const type = h("select", {}, types.map((t) => h("option", { value: t }, t)));
    const form = tool("Export", [field("What", type, "the latest version")], async () => {
      const keys = (await get(exportPath(type.value))).data.keys;
      const latest = keys[String(Math.max(...Object.keys(keys).map(Number)))];
      return type.value === "public-key" ? output("Public key", latest) : secret(type.value, latest);
    });
    grid.append(allows(caps[paths.export], "read") || key.supports_signing ? form : hiddenBecause(paths.export, "read"));
  } else {
    grid.append(notice("info", "Export: this key is not exportable."));
  }
  // Leaving the page: nothing of what the tools returned stays behind.
  return () => clearOutputs(container);
}
