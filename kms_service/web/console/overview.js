// Overview: health and outage, nodes, mounts, counts, the last hour's requests, warnings needing action.
import { allows, call, capabilities, get, listKeys, post } from "./api.js";
import { dl, errorText, h, hiddenBecause, notice, section, table, when } from "./ui.js";
import { keyWarnings, transitMounts } from "./keys.js";

const DAY = 86400;
const MAX_TOKEN_LOOKUPS = 200;

export async function renderOverview(main) {
  main.append(h("h1", {}, "Overview"));
  const caps = await capabilities(["sys/ha-status", "sys/mounts", "sys/metrics", "auth/token/accessors",
    "sys/audit-status", "auth/token/lookup-accessor"]);
  const warnings = h("ul", { class: "warnings" });
  const warningsCard = section("Needs action", warnings);
  const health = section("Health");
  const nodes = section("Nodes");
  const mounts = section("Mounts and keys");
  const tokens = section("Tokens");
  const traffic = section("Requests, last hour");
  main.append(h("div", { class: "grid" }, health, warningsCard, nodes, tokens, mounts, traffic));
  const warn = (text, href) => warnings.append(h("li", {}, href ? h("a", { href }, text) : text));

  const jobs = [
    fillHealth(health, warn),
    allows(caps["sys/ha-status"], "read") ? fillNodes(nodes) : nodes.append(hiddenBecause("sys/ha-status", "read")),
    allows(caps["sys/mounts"], "read") ? fillMounts(mounts, warn) : mounts.append(hiddenBecause("sys/mounts", "read")),
    allows(caps["auth/token/accessors"], "sudo")
      ? fillTokens(tokens, warn, allows(caps["auth/token/lookup-accessor"], "update"))
      : tokens.append(hiddenBecause("auth/token/accessors", "list and sudo")),
    allows(caps["sys/metrics"], "read") ? fillTraffic(traffic) : traffic.append(hiddenBecause("sys/metrics", "read")),
    allows(caps["sys/audit-status"], "sudo") ? fillAudit(warn)
      : warningsCard.append(hiddenBecause("sys/audit-status", "sudo")),
  ];
  await Promise.all(jobs.map((job) => Promise.resolve(job).catch(() => undefined)));
  if (!warnings.children.length) warnings.append(h("li", { class: "ok" }, "Nothing needs action among what this token may see."));
}

async function fillHealth(card, warn) {
  const response = await call("GET", "sys/health", { raw: true, query: { standbycode: "429" } });
  const body = await response.json();
  const state = body.database || "available";
  card.append(dl([
    ["Status", `${response.status} · database ${state}`],
    ["Version", body.kms_service_version || body.version],
    ["Cluster", body.cluster_name],
    body.database_down_seconds !== undefined && ["Database down for", `${body.database_down_seconds} s`],
    body.serving_from_cache_until && ["Serving from memory until", when(body.serving_from_cache_until)],
  ]));
  if (state !== "available") warn(`Database ${state}: this node serves from memory, then fails closed.`);
}

async function fillNodes(card) {
  try {
    const nodes = (await get("sys/ha-status")).data.nodes;
    card.append(table("Nodes heard from", [
      { title: "Node", value: (n) => n.node_id + (n.this_node ? " (this node)" : "") },
      { title: "Host", value: (n) => n.hostname || "—" },
      { title: "Last heard", value: (n) => when(n.last_echo) },
    ], nodes));
  } catch (e) {
    card.append(notice("info", errorText(e)));
  }
}

async function fillMounts(card, warn) {
  const mounts = await transitMounts();
  const rows = [];
  const mountCaps = await capabilities(mounts.map((m) => `${m}/keys`));
  for (const mount of mounts) {
    if (!allows(mountCaps[`${mount}/keys`], "list")) {
      rows.push({ mount, keys: "hidden (no 'list' on " + `${mount}/keys)` });
      continue;
    }
    const names = await listKeys(`${mount}/keys`);
    rows.push({ mount, keys: String(names.length) });
    for (const w of await keyWarnings(mount, names)) warn(w.text, w.href);
  }
  card.append(table("Transit mounts", [
    { title: "Mount", value: (r) => `${r.mount}/` },
    { title: "Keys", value: (r) => r.keys },
  ], rows, { empty: "No transit mount." }));
}

async function fillTokens(card, warn, canLookUp) {
  const accessors = await listKeys("auth/token/accessors");
  const facts = [["Tokens", String(accessors.length)]];
  if (canLookUp) {
    let expiring = 0;
    const now = Date.now() / 1000;
    for (const accessor of accessors.slice(0, MAX_TOKEN_LOOKUPS)) {
      try {
        const info = (await post("auth/token/lookup-accessor", { accessor })).data;
        const expires = info.expire_time ? Date.parse(info.expire_time) / 1000 : null;
        if (expires && expires - now < 30 * DAY) {
          expiring += 1;
          warn(`Token ${accessor} (${info.display_name}) expires ${when(info.expire_time)}`, "#/tokens");
        }
      } catch { /* revoked meanwhile */ }
    }
    facts.push(["Expiring within 30 days", String(expiring)]);
  }
  card.append(dl(facts), h("p", {}, h("a", { href: "#/tokens" }, "All tokens")));
}

function bars(recent) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  const max = Math.max(1, ...recent.map((m) => m.Requests));
  svg.setAttribute("viewBox", "0 0 600 120");
  svg.setAttribute("class", "chart");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `Requests per minute, peak ${max}`);
  const now = Math.floor(Date.now() / 60000);
  for (const m of recent) {
    const age = now - Math.floor(Date.parse(m.Minute) / 60000);
    const height = Math.max(2, Math.round((m.Requests / max) * 110));
    const bar = document.createElementNS(ns, "rect");
    bar.setAttribute("x", String(590 - age * 10));
    bar.setAttribute("y", String(120 - height));
    bar.setAttribute("width", "8");
    bar.setAttribute("height", String(height));
    bar.setAttribute("class", m.ServerErrors ? "bar error" : "bar");
    svg.append(bar);
  }
  return svg;
}

async function fillTraffic(card) {
  const metrics = await get("sys/metrics", { query: { recent: "true" } });
  const recent = metrics.Recent || [];
  const total = recent.reduce((n, m) => n + m.Requests, 0);
  const errors = recent.reduce((n, m) => n + m.ServerErrors, 0);
  const mean = total ? recent.reduce((s, m) => s + m.MeanSeconds * m.Requests, 0) / total : 0;
  card.append(dl([
    ["Requests", String(total)],
    ["Server errors", String(errors)],
    ["Mean latency", `${(mean * 1000).toFixed(2)} ms`],
  ]), bars(recent), table("Requests by minute", [
    { title: "Minute", value: (m) => when(m.Minute) },
    { title: "Requests", value: (m) => String(m.Requests) },
    { title: "5xx", value: (m) => String(m.ServerErrors) },
    { title: "Mean", value: (m) => `${(m.MeanSeconds * 1000).toFixed(2)} ms` },
    { title: "p95 ≤", value: (m) => (m.P95Seconds === null ? "> 10 s" : `${m.P95Seconds * 1000} ms`) },
  ], recent.slice(-10).reverse(), { empty: "No request in the last hour." }));
}

async function fillAudit(warn) {
  const state = (await get("sys/audit-status")).data;
  if (state.last_error) warn(`Audit: ${state.last_error}`, "#/audit");
}
