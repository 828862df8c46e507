// Keys: the list per mount and a key's page (versions, settings, metadata, actions, tools).
import { allows, capabilities, del, get, listKeys, post } from "./api.js";
import { announce, button, dl, errorText, field, h, hiddenBecause, notice, section, table, when } from "./ui.js";
import { renderTools } from "./key_tools.js";

const MAX_KEY_READS = 200;

export async function transitMounts() {
  // Without 'read' on sys/mounts the token still has the default mount's paths to try.
  if (!allows((await capabilities(["sys/mounts"]))["sys/mounts"], "read")) return ["transit"];
  try {
    const data = (await get("sys/mounts")).data;
    return Object.entries(data).filter(([, m]) => m.type === "transit").map(([p]) => p.replace(/\/$/, "")).sort();
  } catch {
    return ["transit"];
  }
}

export function versionCreated(entry) {
  if (entry === null || entry === undefined) return null;
  if (typeof entry === "number") return entry * 1000;
  if (typeof entry === "object" && entry.creation_time) return Date.parse(entry.creation_time);
  return null;
}

export const keyHref = (mount, name) => `#/keys/${encodeURIComponent(mount)}/${encodeURIComponent(name)}`;

function usageTotals(key) {
  const usage = Object.values(key.usage || {});
  return {
    encryptions: usage.reduce((n, u) => n + (u.encryptions || 0), 0),
    signatures: usage.reduce((n, u) => n + (u.signatures || 0), 0),
    lastUsed: usage.map((u) => u.last_used).filter(Boolean).sort().pop() || null,
  };
}

async function readKeys(mount, names) {
  const caps = await capabilities(names.slice(0, MAX_KEY_READS).map((n) => `${mount}/keys/${n}`));
  const keys = [];
  for (const name of names.slice(0, MAX_KEY_READS)) {
    if (!allows(caps[`${mount}/keys/${name}`], "read")) { keys.push({ name, hidden: true }); continue; }
    try {
      keys.push({ name, ...(await get(`${mount}/keys/${name}`)).data });
    } catch (e) {
      keys.push({ name, hidden: true, error: errorText(e) });
    }
  }
  return keys;
}

export async function keyWarnings(mount, names) {
  const warnings = [];
  const now = Date.now();
  for (const key of await readKeys(mount, names)) {
    if (key.hidden) continue;
    const href = keyHref(mount, key.name);
    const latest = key.usage && key.usage[String(key.latest_version)];
    // The key's read gives its nonce budget (only types that have one): the service's own threshold.
    if (key.nonce_budget && latest && latest.encryptions >= key.nonce_budget.warning_at) {
      warnings.push({ text: `${mount}/${key.name}: version ${key.latest_version} is near its nonce budget (${latest.encryptions} encryptions): rotate it`, href });
    }
    const created = versionCreated(key.keys && key.keys[String(key.latest_version)]);
    if (key.auto_rotate_period > 0 && created && now - created > key.auto_rotate_period * 1000) {
      warnings.push({ text: `${mount}/${key.name}: past its rotation period (latest version from ${when(created / 1000)})`, href });
    }
  }
  return warnings;
}

export async function renderKeys(main) {
  main.append(h("h1", {}, "Keys"));
  const mounts = await transitMounts();
  const mountSelect = h("select", {}, mounts.map((m) => h("option", { value: m }, `${m}/`)));
  const search = h("input", { type: "search", placeholder: "name, type or label" });
  const results = h("div", { "aria-live": "polite" });
  const openName = h("input", { type: "text", autocomplete: "off" });
  const open = h("form", { class: "inline-form", "aria-label": "Open a key" },
    field("Key name", openName, "on the chosen mount, e.g. a key this token may use but not list"),
    h("button", { type: "submit" }, "Open"));
  open.addEventListener("submit", (e) => {
    e.preventDefault();
    if (openName.value.trim()) location.hash = keyHref(mountSelect.value, openName.value.trim());
  });
  main.append(h("div", { class: "toolbar" }, field("Mount", mountSelect), field("Search", search)), results, open);
  let keys = [];
  let mount = mounts[0];

  const draw = () => {
    const q = search.value.trim().toLowerCase();
    const shown = keys.filter((k) => !q || k.name.toLowerCase().includes(q) || (k.type || "").includes(q)
      || JSON.stringify(k.custom_metadata || {}).toLowerCase().includes(q));
    results.replaceChildren(table(`Keys of ${mount}/ (${shown.length} of ${keys.length})`, [
      { title: "Name", value: (k) => h("a", { href: keyHref(mount, k.name) }, k.name) },
      { title: "Type", value: (k) => (k.hidden ? "hidden (no 'read')" : k.type) },
      { title: "Versions", value: (k) => (k.hidden ? "—" : String(Object.keys(k.keys || {}).length)) },
      { title: "Latest", value: (k) => (k.hidden ? "—" : String(k.latest_version)) },
      { title: "Last rotated", value: (k) => (k.hidden ? "—" : when((versionCreated(k.keys[String(k.latest_version)]) || 0) / 1000 || null)) },
      { title: "Usage", value: (k) => {
        if (k.hidden) return "—";
        const u = usageTotals(k);
        return `${u.encryptions} enc · ${u.signatures} sig · last ${when(u.lastUsed)}`;
      } },
    ], shown, { empty: keys.length ? "No key matches." : "No key on this mount." }));
  };

  const load = async () => {
    results.replaceChildren(notice("info", "Loading…"));
    const caps = await capabilities([`${mount}/keys`]);
    if (!allows(caps[`${mount}/keys`], "list")) {
      keys = [];
      results.replaceChildren(hiddenBecause(`${mount}/keys`, "list"));
      return;
    }
    keys = await readKeys(mount, await listKeys(`${mount}/keys`));
    draw();
  };
  mountSelect.addEventListener("change", () => { mount = mountSelect.value; load(); });
  search.addEventListener("input", draw);
  await load();
}

function versionRows(key) {
  const rows = [];
  const minAvailable = key.min_available_version || 0;
  for (let v = key.latest_version; v >= 1; v -= 1) {
    const entry = key.keys ? key.keys[String(v)] : undefined;
    const usage = (key.usage || {})[String(v)] || {};
    let state = "retained";
    if (v < minAvailable || entry === undefined) state = "trimmed";
    else if (v < key.min_decryption_version) state = "retained, not decrypting";
    rows.push({ v, created: versionCreated(entry), usage, state });
  }
  return rows;
}

export async function renderKey(main, mount, name) {
  const base = `${mount}/keys/${name}`;
  const paths = {
    read: base, rotate: `${base}/rotate`, config: `${base}/config`, trim: `${base}/trim`,
    encrypt: `${mount}/encrypt/${name}`, decrypt: `${mount}/decrypt/${name}`, rewrap: `${mount}/rewrap/${name}`,
    datakey: `${mount}/datakey/plaintext/${name}`, datakeyWrapped: `${mount}/datakey/wrapped/${name}`,
    sign: `${mount}/sign/${name}`, verify: `${mount}/verify/${name}`, hmac: `${mount}/hmac/${name}`,
    export: `${mount}/export/encryption-key/${name}`,
  };
  const caps = await capabilities(Object.values(paths));
  const can = (what, capability = "update") => allows(caps[paths[what]], capability);
  main.append(h("p", {}, h("a", { href: "#/keys" }, "← Keys")), h("h1", {}, `${mount}/${name}`));
  if (!can("read", "read")) {
    // Without 'read' the key's page shows what the token may still do with it: the tools it is granted.
    main.append(hiddenBecause(base, "read"));
    const tools = section("Tools");
    main.append(tools);
    // The key's type is unknown: show the family of every tool granted (those of it not granted say why).
    const encrypting = ["encrypt", "decrypt", "rewrap", "datakey"].some((t) => can(t));
    const signing = ["sign", "verify"].some((t) => can(t));
    const granted = {
      supports_encryption: encrypting || !signing, supports_decryption: encrypting || !signing,
      supports_signing: signing || !encrypting, exportable: false, derived: false,
    };
    return renderTools(tools, mount, name, granted, paths, caps);
  }
  const key = (await get(base)).data;

  main.append(section("Versions", table("Versions", [
    { title: "Version", value: (r) => String(r.v) + (r.v === key.latest_version ? " (latest)" : "") },
    { title: "Created", value: (r) => when(r.created ? r.created / 1000 : null) },
    { title: "Encryptions", value: (r) => String(r.usage.encryptions ?? 0) },
    { title: "Signatures", value: (r) => String(r.usage.signatures ?? 0) },
    { title: "Last use", value: (r) => when(r.usage.last_used) },
    { title: "State", value: (r) => r.state },
  ], versionRows(key))));

  main.append(section("Settings", dl([
    ["Type", key.type],
    ["Latest version", String(key.latest_version)],
    ["Min. decryption version", String(key.min_decryption_version)],
    ["Min. encryption version", String(key.min_encryption_version)],
    ["Min. available version", String(key.min_available_version ?? 0)],
    ["Auto-rotate period", key.auto_rotate_period ? `${key.auto_rotate_period} s` : "off"],
    ["Deletion allowed", String(key.deletion_allowed)],
    ["Exportable", String(key.exportable)],
    ["Plaintext backup allowed", String(key.allow_plaintext_backup)],
    ["Derived", String(key.derived)],
    key.retain_versions !== undefined && ["Retain versions", String(key.retain_versions)],
    key.nonce_budget && ["Nonce budget", `warned from ${key.nonce_budget.warning_at.toLocaleString("en")} `
      + `encryptions of a version, rotated at ${key.nonce_budget.rotation_at.toLocaleString("en")}`],
  ])), section("Metadata", Object.keys(key.custom_metadata || {}).length
    ? dl(Object.entries(key.custom_metadata)) : notice("info", "No labels.")));

  const actions = section("Actions");
  main.append(actions);
  const result = h("div", { "aria-live": "polite" });
  const act = async (label, work) => {
    try {
      await work();
      announce(`${label}: done`);
      location.hash = keyHref(mount, name); // same hash: render again by hand
      window.dispatchEvent(new HashChangeEvent("hashchange"));
    } catch (e) {
      result.replaceChildren(notice("error", `${label}: ${errorText(e)}`));
    }
  };

  if (can("rotate")) actions.append(button("Rotate", () => act("Rotate", () => post(paths.rotate, {}))));
  else actions.append(hiddenBecause(paths.rotate, "update"));

  if (can("config")) {
    const minDec = h("input", { type: "number", min: "0", value: String(key.min_decryption_version) });
    const minEnc = h("input", { type: "number", min: "0", value: String(key.min_encryption_version) });
    const period = h("input", { type: "text", value: String(key.auto_rotate_period || 0) });
    const deletion = h("input", { type: "checkbox", checked: key.deletion_allowed });
    const exportable = h("input", { type: "checkbox", checked: key.exportable, disabled: key.exportable });
    const form = h("form", { class: "inline-form", "aria-label": "Key configuration" },
      field("Min. decryption version", minDec), field("Min. encryption version", minEnc),
      field("Auto-rotate period", period, "seconds or a duration (0 = off)"),
      field("Deletion allowed", deletion), field("Exportable", exportable, "cannot be turned off"),
      h("button", { type: "submit" }, "Save configuration"));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const body = {
        min_decryption_version: Number(minDec.value), min_encryption_version: Number(minEnc.value),
        auto_rotate_period: period.value, deletion_allowed: deletion.checked,
      };
      if (exportable.checked && !key.exportable) body.exportable = true;
      act("Configuration", () => post(paths.config, body));
    });
    actions.append(form);
  } else actions.append(hiddenBecause(paths.config, "update"));

  if (can("trim")) {
    const minAvail = h("input", { type: "number", min: "0", value: String(key.min_available_version ?? 0) });
    const form = h("form", { class: "inline-form", "aria-label": "Trim versions" },
      field("Trim versions below", minAvail, "deleted for good; at most the min. decryption version"),
      h("button", { type: "submit" }, "Trim"));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      act("Trim", () => post(paths.trim, { min_available_version: Number(minAvail.value) }));
    });
    actions.append(form);
  } else actions.append(hiddenBecause(paths.trim, "update"));

  if (can("read", "delete")) {
    const confirmName = h("input", { type: "text", autocomplete: "off" });
    const form = h("form", { class: "inline-form danger", "aria-label": "Delete the key" },
      field(`Type “${name}” to delete this key`, confirmName,
        key.deletion_allowed ? "every version is deleted: what it encrypted cannot be decrypted again"
          : "deletion is not allowed in the key's configuration"),
      h("button", { type: "submit", class: "danger" }, `Delete ${name}`));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      if (confirmName.value !== name) {
        result.replaceChildren(notice("error", `Type the key's name, ${name}, to confirm.`));
        confirmName.focus();
        return;
      }
      try {
        await del(base);
        announce(`Deleted ${name}`);
        location.hash = "#/keys";
      } catch (err) {
        result.replaceChildren(notice("error", `Delete: ${errorText(err)}`));
      }
    });
    actions.append(form);
  } else actions.append(hiddenBecause(base, "delete"));
  actions.append(result);

  const tools = section("Tools");
  main.append(tools);
  return renderTools(tools, mount, name, key, paths, caps);
}
