// The service's own Vault API, with the signed-in token. The token lives in this tab's sessionStorage only:
// never in a URL, a cookie or the browser's lasting storage, and sign-out removes it.
const TOKEN = "kms-console-token";
const NAMESPACE = "kms-console-namespace";

export class ApiError extends Error {
  constructor(status, errors) {
    super(errors.length ? errors.join("; ") : `HTTP ${status}`);
    this.status = status;
    this.errors = errors;
  }
}

export const session = {
  token: () => sessionStorage.getItem(TOKEN),
  namespace: () => sessionStorage.getItem(NAMESPACE) || "",
  signIn(token) { sessionStorage.setItem(TOKEN, token); },
  setNamespace(ns) {
    if (ns) sessionStorage.setItem(NAMESPACE, ns); else sessionStorage.removeItem(NAMESPACE);
  },
  signOut() {
    sessionStorage.removeItem(TOKEN);
    sessionStorage.removeItem(NAMESPACE);
  },
};

function encodePath(path) {
  return path.split("/").map(encodeURIComponent).join("/");
}

// A request to /v1/<path>. LIST is sent as GET ?list=true, which Vault takes everywhere LIST is taken.
export async function call(method, path, { body, query, raw, token, namespace } = {}) {
  const url = new URL(`/v1/${encodePath(path)}`, location.origin);
  let verb = method;
  if (method === "LIST") { verb = "GET"; url.searchParams.set("list", "true"); }
  for (const [k, v] of Object.entries(query || {})) url.searchParams.set(k, v);
  const headers = { "X-Vault-Request": "true" };
  const bearer = token ?? session.token();
  if (bearer) headers["X-Vault-Token"] = bearer;
  const ns = namespace ?? session.namespace();
  if (ns) headers["X-Vault-Namespace"] = ns;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url, {
    method: verb, headers, body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit", cache: "no-store", referrerPolicy: "no-referrer", redirect: "error",
  });
  if (raw) return response;
  const text = await response.text();
  let payload = null;
  try { payload = text ? JSON.parse(text) : null; } catch { payload = null; }
  if (!response.ok) {
    throw new ApiError(response.status, (payload && Array.isArray(payload.errors)) ? payload.errors : []);
  }
  return payload;
}

export const get = (path, opts) => call("GET", path, opts);
export const post = (path, body, opts) => call("POST", path, { ...opts, body: body ?? {} });
export const list = (path, opts) => call("LIST", path, opts);
export const del = (path, opts) => call("DELETE", path, opts);

// A list that may be empty: Vault answers an empty LIST with 404.
export async function listKeys(path, opts) {
  try {
    return (await list(path, opts)).data.keys || [];
  } catch (e) {
    if (e.status === 404) return [];
    throw e;
  }
}

// The signed-in token's capabilities on each path (sys/capabilities-self), as {path: [names]}.
export async function capabilities(paths, opts) {
  if (!paths.length) return {};
  const answer = await post("sys/capabilities-self", { paths }, opts);
  const result = {};
  for (const p of paths) result[p] = answer[p] || (answer.data && answer.data[p]) || [];
  return result;
}

export function allows(caps, capability) {
  if (!caps || caps.includes("deny")) return false;
  return caps.includes("root") || caps.includes(capability);
}

// Base64 of UTF-8 text, and back.
export function toBase64(text) {
  const bytes = new TextEncoder().encode(text);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}

export function fromBase64(b64) {
  const binary = atob(b64);
  const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  return new TextDecoder("utf-8", { fatal: false }).decode(bytes);
}
