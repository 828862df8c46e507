// The console's shell: sign-in, the namespace, the sections and the hash routes (#/keys/...).
import { allows, ApiError, capabilities, get, listKeys, session } from "./api.js";
import { announce, clearOutputs, errorText, field, h, notice } from "./ui.js";
import { renderOverview } from "./overview.js";
import { renderKey, renderKeys } from "./keys.js";
import { renderEndpoints, renderPolicies, renderPolicy, renderTokens } from "./access.js";
import { renderAudit } from "./audit.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
const nsSelect = document.getElementById("namespace");
let leaving = null; // the current view's clean-up

const ROUTES = [
  [/^\/overview$/, () => renderOverview],
  [/^\/keys$/, () => renderKeys],
  [/^\/keys\/([^/]+)\/([^/]+)$/, (m) => (el) => renderKey(el, decodeURIComponent(m[1]), decodeURIComponent(m[2]))],
  [/^\/tokens$/, () => renderTokens],
  [/^\/policies$/, () => renderPolicies],
  [/^\/policies\/([^/]+)$/, (m) => (el) => renderPolicy(el, decodeURIComponent(m[1]))],
  [/^\/endpoints$/, () => renderEndpoints],
  [/^\/audit$/, () => renderAudit],
];

function leave() {
  clearOutputs(main);
  if (leaving) { try { leaving(); } catch { /* the view is gone either way */ } }
  leaving = null;
  delete main.dataset.ready;
  main.replaceChildren();
}

async function route() {
  if (!session.token()) { showSignIn(); return; }
  const path = location.hash.replace(/^#/, "") || "/overview";
  leave();
  for (const link of nav.querySelectorAll("a")) {
    const target = link.getAttribute("href").slice(1);
    if (path === target || path.startsWith(`${target}/`)) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const match = ROUTES.map(([re, make]) => [path.match(re), make]).find(([m]) => m);
  if (!match) { main.append(notice("error", "No such page.")); return; }
  const view = match[1](match[0]);
  try {
    leaving = (await view(main)) || null;
  } catch (e) {
    if (e instanceof ApiError && e.status === 403 && !(await stillSignedIn())) return;
    main.append(notice("error", errorText(e)));
  }
  main.dataset.ready = "true"; // every read of the page has answered
  main.focus({ preventScroll: true });
  window.scrollTo(0, 0);
}

async function stillSignedIn() {
  try {
    await get("auth/token/lookup-self");
    return true;
  } catch (e) {
    if (e.status === 403) {
      session.signOut();
      showSignIn("The token is no longer valid: sign in again.");
      return false;
    }
    return true;
  }
}

function showSignIn(message) {
  leave();
  nav.hidden = true;
  who.hidden = true;
  nsSelect.replaceChildren();
  const input = h("input", { type: "password", name: "token", autocomplete: "off", spellcheck: "false", required: true });
  const problem = h("p", { class: "notice error", role: "alert", hidden: !message }, message || "");
  const form = h("form", { class: "card sign-in", "aria-labelledby": "sign-in-title" },
    h("h1", { id: "sign-in-title" }, "Sign in"),
    h("p", {}, "Sign in with a token. Every page shows what this token's policies allow, and nothing else. "
      + "The token is kept in this browser tab only, until you sign out or close the tab."),
    field("Token", input),
    problem,
    h("button", { type: "submit" }, "Sign in"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    input.value = "";
    try {
      await get("auth/token/lookup-self", { token });
    } catch (e) {
      problem.hidden = false;
      problem.textContent = e.status === 403 ? "This token is not valid." : errorText(e);
      input.focus();
      return;
    }
    session.signIn(token);
    await enter();
  });
  main.append(form);
  input.focus();
}

async function loadNamespaces() {
  nsSelect.replaceChildren(h("option", { value: "" }, "root"));
  let names = [];
  try {
    // The namespaces under the root, whichever one is chosen now.
    const caps = await capabilities(["sys/namespaces"], { namespace: "" });
    if (allows(caps["sys/namespaces"], "list")) names = await listKeys("sys/namespaces", { namespace: "" });
  } catch {
    names = []; // no namespaces on this server
  }
  for (const name of names) nsSelect.append(h("option", { value: name.replace(/\/$/, "") }, name.replace(/\/$/, "")));
  const chosen = session.namespace();
  if (chosen && !names.map((n) => n.replace(/\/$/, "")).includes(chosen)) session.setNamespace("");
  nsSelect.value = session.namespace();
  nsSelect.disabled = names.length === 0;
  nsSelect.title = names.length ? "The namespace every page reads" : "No other namespace this token may see";
}

async function enter() {
  let me;
  try {
    me = (await get("auth/token/lookup-self")).data;
  } catch (e) {
    session.signOut();
    showSignIn(e.status === 403 ? "The token is no longer valid: sign in again." : errorText(e));
    return;
  }
  nav.hidden = false;
  who.hidden = false;
  document.getElementById("identity").textContent =
    `${me.display_name || "token"} · ${(me.policies || []).join(", ")} · accessor ${me.accessor}`;
  await loadNamespaces();
  announce("Signed in");
  if (!location.hash || location.hash === "#") location.hash = "#/overview";
  else await route();
}

document.getElementById("sign-out").addEventListener("click", () => {
  session.signOut();
  document.getElementById("identity").textContent = "";
  history.replaceState(null, "", location.pathname);
  showSignIn();
  announce("Signed out");
});

nsSelect.addEventListener("change", () => {
  session.setNamespace(nsSelect.value);
  announce(`Namespace ${nsSelect.value || "root"}`);
  route();
});

window.addEventListener("hashchange", route);
if (session.token()) enter(); else showSignIn();
