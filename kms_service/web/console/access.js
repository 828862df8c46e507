// Tokens (by accessor: a token itself is never shown), policies (read and edit), the services' endpoints.
import { allows, capabilities, get, listKeys, post } from "./api.js";
import { announce, button, dl, errorText, field, h, hiddenBecause, notice, section, table, when } from "./ui.js";

const MAX_TOKENS = 500;

export async function renderTokens(main) {
  main.append(h("h1", {}, "Tokens"));
  const me = (await get("auth/token/lookup-self")).data;
  main.append(section("This token", dl([
    ["Accessor", me.accessor], ["Display name", me.display_name], ["Policies", (me.policies || []).join(", ")],
    ["Expires", when(me.expire_time)], ["Uses left", me.num_uses ? String(me.num_uses) : "unlimited"],
  ])));
  const caps = await capabilities(["auth/token/accessors", "auth/token/lookup-accessor", "auth/token/roles",
    "auth/token/revoke-accessor"]);
  const roles = section("Token roles");
  main.append(roles);
  if (allows(caps["auth/token/roles"], "list")) {
    const names = await listKeys("auth/token/roles"); // 404: none, or no roles on this server
    roles.append(table("Roles", [{ title: "Role", value: (r) => r }], names, { empty: "No token role." }));
  } else roles.append(hiddenBecause("auth/token/roles", "list"));
  const all = section("All tokens");
  main.append(all);
  if (!allows(caps["auth/token/accessors"], "sudo")) { all.append(hiddenBecause("auth/token/accessors", "list and sudo")); return; }
  const accessors = await listKeys("auth/token/accessors");
  if (!allows(caps["auth/token/lookup-accessor"], "update")) {
    all.append(hiddenBecause("auth/token/lookup-accessor", "update"),
      table("Accessors", [{ title: "Accessor", value: (a) => a }], accessors));
    return;
  }
  const rows = [];
  for (const accessor of accessors.slice(0, MAX_TOKENS)) {
    try {
      rows.push((await post("auth/token/lookup-accessor", { accessor })).data);
    } catch { /* revoked meanwhile */ }
  }
  const soon = Date.now() / 1000 + 30 * 86400;
  const mayRevoke = allows(caps["auth/token/revoke-accessor"], "update");
  const confirmation = h("div", { "aria-live": "polite" });
  if (!mayRevoke) all.append(hiddenBecause("auth/token/revoke-accessor", "update"));
  all.append(table(`Tokens (${rows.length})`, [
    { title: "Accessor", value: (t) => t.accessor },
    { title: "Name", value: (t) => t.display_name },
    { title: "Policies", value: (t) => (t.policies || []).join(", ") },
    { title: "Created", value: (t) => when(t.creation_time) },
    { title: "Expires", value: (t) => {
      const text = when(t.expire_time);
      return t.expire_time && Date.parse(t.expire_time) / 1000 < soon ? h("strong", {}, `${text} (within 30 days)`) : text;
    } },
    { title: "Uses left", value: (t) => (t.num_uses ? String(t.num_uses) : "unlimited") },
    mayRevoke && { title: "Revoke", value: (t) => button("Revoke", (e) => confirmRevoke(confirmation, t, me, e.currentTarget),
      { class: "danger", "aria-label": `Revoke ${t.accessor}` }) },
  ].filter(Boolean), rows), confirmation);
}

// Revoking asks first, naming the token by its accessor; the tokens it made go with it (Vault's rule).
function confirmRevoke(holder, token, me, origin) {
  const self = token.accessor === me.accessor;
  const problem = h("p", { class: "notice error", role: "alert", hidden: true });
  const cancel = button("Cancel", () => { holder.replaceChildren(); origin.focus(); });
  const revoke = button(`Yes, revoke ${token.accessor}`, async () => {
    revoke.disabled = true;
    try {
      await post("auth/token/revoke-accessor", { accessor: token.accessor });
    } catch (e) {
      problem.hidden = false;
      problem.textContent = `Revoke: ${errorText(e)}`;
      revoke.disabled = false;
      return;
    }
    announce(`Revoked the token with accessor ${token.accessor}`);
    window.dispatchEvent(new HashChangeEvent("hashchange")); // the page again, without it (or signed out)
  }, { class: "danger" });
  holder.replaceChildren(h("div", { class: "card confirm", role: "group", "aria-label": "Confirm revoking" },
    h("p", {}, `Revoke the token with accessor ${token.accessor}`
      + ` (${token.display_name || "token"}; ${(token.policies || []).join(", ")})?`
      + " The tokens it made are revoked with it; a client using it is refused from its next request."),
    self ? notice("warn", "This is the token you are signed in with: the console signs out.") : null,
    problem, h("div", { class: "inline-form" }, revoke, cancel)));
  revoke.focus();
}

export async function renderPolicies(main) {
  main.append(h("h1", {}, "Policies"));
  const caps = await capabilities(["sys/policies/acl"]);
  const checker = capabilityChecker();
  if (!allows(caps["sys/policies/acl"], "list")) {
    main.append(hiddenBecause("sys/policies/acl", "list"), checker);
    return;
  }
  const names = await listKeys("sys/policies/acl");
  const newName = h("input", { type: "text", autocomplete: "off", pattern: "[A-Za-z0-9_.@-]+" });
  const create = h("form", { class: "inline-form", "aria-label": "New policy" },
    field("New policy's name", newName), h("button", { type: "submit" }, "Write a new policy"));
  create.addEventListener("submit", (e) => {
    e.preventDefault();
    if (newName.value) location.hash = `#/policies/${encodeURIComponent(newName.value)}`;
  });
  main.append(section("ACL policies", table("Policies", [
    { title: "Name", value: (n) => h("a", { href: `#/policies/${encodeURIComponent(n)}` }, n) },
    { title: "Kind", value: (n) => {
      if (n === "root") return "built in (everything)";
      if (n.includes(":")) return "from the services YAML";
      return n === "default" ? "document (every token's default)" : "document";
    } },
  ], names), create), checker);
}

function capabilityChecker() {
  const path = h("input", { type: "text", autocomplete: "off", placeholder: "transit/keys/my-key" });
  const out = h("p", { "aria-live": "polite" });
  const form = h("form", { class: "inline-form", "aria-label": "Check capabilities" },
    field("Path", path, "what this token may do there (sys/capabilities-self)"),
    h("button", { type: "submit" }, "Check"), out);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const caps = await capabilities([path.value.trim()]);
      out.textContent = `${path.value.trim()}: ${(caps[path.value.trim()] || []).join(", ") || "none"}`;
      out.dataset.capabilities = (caps[path.value.trim()] || []).join(",");
    } catch (err) {
      out.textContent = errorText(err);
    }
  });
  return section("This token's capabilities", form);
}

export async function renderPolicy(main, name) {
  const path = `sys/policies/acl/${name}`;
  main.append(h("p", {}, h("a", { href: "#/policies" }, "← Policies")), h("h1", {}, `Policy ${name}`));
  const caps = (await capabilities([path]))[path];
  if (!allows(caps, "read") && !allows(caps, "update") && !allows(caps, "create")) {
    main.append(hiddenBecause(path, "read"));
    return;
  }
  let text = "";
  let exists = true;
  if (allows(caps, "read")) {
    try {
      text = (await get(path)).data.policy;
    } catch (e) {
      if (e.status !== 404) throw e;
      exists = false;
    }
  }
  const editable = name !== "root" && !name.includes(":") && (allows(caps, "update") || allows(caps, "create"));
  const area = h("textarea", { rows: 16, spellcheck: "false", class: "code", readonly: !editable });
  area.value = text || (exists ? "" : 'path "transit/keys/*" {\n  capabilities = ["read", "list"]\n}\n');
  const problem = h("div", { id: "policy-problem", class: "notice error", role: "alert", hidden: true });
  area.setAttribute("aria-describedby", "policy-problem");
  const form = h("form", { "aria-label": `Policy ${name}` }, field("Policy document (HCL or JSON)", area), problem);
  if (editable) {
    form.append(h("button", { type: "submit" }, "Save"));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      problem.hidden = true;
      area.removeAttribute("aria-invalid");
      try {
        await post(path, { policy: area.value });
        announce(`Policy ${name} saved`);
        problem.hidden = false;
        problem.className = "notice ok";
        problem.setAttribute("role", "status");
        problem.textContent = "Saved. Tokens holding this policy have the new capabilities from their next request.";
      } catch (err) {
        problem.hidden = false;
        problem.className = "notice error";
        problem.setAttribute("role", "alert");
        area.setAttribute("aria-invalid", "true");
        problem.textContent = err.errors && err.errors.length ? err.errors.join("\n") : errorText(err);
        area.focus();
      }
    });
  } else {
    form.append(notice("info", name === "root" || name.includes(":")
      ? "Built in: made from its template and the services YAML, not edited here."
      : `Read only: this token's policies do not grant 'update' on ${path}.`));
  }
  main.append(section("Document", form));
}

export async function renderEndpoints(main) {
  main.append(h("h1", {}, "Endpoints"));
  const caps = await capabilities(["sys/endpoints"]);
  if (!allows(caps["sys/endpoints"], "list")) { main.append(hiddenBecause("sys/endpoints", "list")); return; }
  let names = [];
  let info = {};
  try {
    const data = (await get("sys/endpoints", { query: { list: "true" } })).data;
    names = data.keys;
    info = data.key_info;
  } catch (e) {
    if (e.status !== 404) throw e;
  }
  main.append(section("The services YAML's endpoints", table("Endpoints", [
    { title: "Endpoint", value: (n) => n },
    { title: "Grants", value: (n) => h("ul", { class: "plain" }, info[n].grants.map((g) => h("li", {}, `${g.policy} on ${g.key}`))) },
    { title: "Newest token (accessor)", value: (n) => info[n].token_accessor || "none" },
    { title: "Expires", value: (n) => when(info[n].token_expires_at) },
    { title: "Tokens", value: (n) => String(info[n].token_count ?? 0) },
  ], names, { empty: "No endpoint in the services YAML." })));
}
