// DOM helpers. Text goes in as text (textContent), never as HTML.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el) { el.replaceChildren(); return el; }

let ids = 0;
export const uid = (prefix) => `${prefix}-${++ids}`;

export function announce(text) {
  const status = document.getElementById("status");
  status.textContent = "";
  setTimeout(() => { status.textContent = text; }, 10);
}

export function section(title, ...children) {
  const id = uid("s");
  return h("section", { class: "card", "aria-labelledby": id }, h("h2", { id }, title), ...children);
}

export function notice(kind, text) {
  return h("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : null }, text);
}

// Why a part of the page is absent: the capability the token lacks, on which path.
export function hiddenBecause(path, capability) {
  return h("p", { class: "notice hidden-why" },
    `Hidden: this token's policies do not grant '${capability}' on ${path}.`);
}

export function errorText(e) {
  if (e && e.status === 403) return "Permission denied (403): this token's policies do not allow it.";
  if (e && e.status === 404) return "Not available on this server (404).";
  return e && e.message ? e.message : String(e);
}

export function table(caption, columns, rows, { empty = "Nothing to show." } = {}) {
  if (!rows.length) return notice("info", empty);
  return h("div", { class: "table-wrap" },
    h("table", {},
      h("caption", {}, caption),
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c.title)))),
      h("tbody", {}, rows.map((r) => h("tr", {}, columns.map((c, i) => {
        const value = c.value(r);
        return i === 0 ? h("th", { scope: "row" }, value) : h("td", {}, value);
      }))))));
}

export function dl(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v ?? "—")]));
}

export function when(value) {
  if (value === null || value === undefined || value === "") return "—";
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  return date.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

export function field(label, control, hint) {
  const id = control.id || uid("f");
  control.id = id;
  const hintId = hint ? `${id}-hint` : null;
  if (hintId) control.setAttribute("aria-describedby", hintId);
  return h("div", { class: "field" }, h("label", { for: id }, label), control,
    hint ? h("small", { id: hintId, class: "muted" }, hint) : null);
}

export function button(text, onclick, attrs = {}) {
  return h("button", { type: "button", ...attrs, onclick }, text);
}

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    return false;
  }
}

// A tool's output: read-only, selectable, with a copy button. clearOutputs() empties every one.
export function output(label, value) {
  const area = h("textarea", { readonly: true, rows: Math.min(6, 1 + Math.ceil(String(value).length / 70)), class: "output" });
  area.value = value;
  const copy = button("Copy", async () => {
    area.select();
    announce((await copyText(area.value)) ? `${label} copied` : `${label} selected: press Ctrl+C to copy`);
  }, { "aria-label": `Copy ${label}` });
  return h("div", { class: "output-block" }, field(label, area), copy);
}

// A secret (a plaintext, a data key, an exported key): kept out of the page until asked for, shown once.
export function secret(label, value) {
  let held = value;
  const holder = h("div", { class: "secret" });
  const show = button(`Show ${label}`, () => {
    if (held === null) return;
    holder.replaceChildren(output(label, held), notice("warn", "Shown once: it is gone when you leave this page."));
    held = null;
    holder.querySelector("textarea").focus();
  });
  holder.append(show, h("span", { class: "muted" }, " The value is not on the page until you show it."));
  return holder;
}

export function clearOutputs(root = document) {
  for (const area of root.querySelectorAll("textarea.output")) area.value = "";
}
