// The console in Firefox: Debian's firefox-esr driven by puppeteer-core over WebDriver BiDi (a stock browser,
// no driver binary, nothing downloaded). Reads one JSON document on stdin (the server's URL, the tokens, the
// pages, the browser's path) and prints one JSON document of what it saw; tests/test_console_firefox.py
// checks it. A step that does not happen within its timeout ends the walk with exit status 1, naming it.
import puppeteer from "puppeteer-core";

const TIMEOUT = 20_000;

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString("utf8"));
}

const given = await readStdin();
const report = { browser: "", errors: [], violations: [], requests: [], failed: [], steps: [] };
let step = "launching the browser";
const at = (name) => { step = name; report.steps.push(name); };

// Everything a page did that the test checks at the end. A Content-Security-Policy violation is reported to the
// page as an event, which a script added before the page's own turns into a console message.
async function watch(page) {
  page.setDefaultTimeout(TIMEOUT);
  await page.evaluateOnNewDocument(() => {
    document.addEventListener("securitypolicyviolation", (e) => {
      console.warn(`csp-violation ${e.effectiveDirective} ${e.blockedURI}`);
    });
  });
  page.on("console", (m) => {
    if (m.text().startsWith("csp-violation ")) report.violations.push(m.text().slice("csp-violation ".length));
    else if (m.type() === "error") report.errors.push(m.text());
  });
  page.on("pageerror", (e) => report.errors.push(`uncaught: ${e.message}`));
  page.on("request", (r) => report.requests.push(r.url()));
  page.on("response", (r) => { if (r.status() >= 400) report.failed.push([r.status(), r.url()]); });
  return page;
}

async function waitForText(page, selector, text) {
  await page.waitForFunction(
    (s, t) => [...document.querySelectorAll(s)].some((e) => e.textContent.includes(t)), {}, selector, text);
}

// The page's reads have all answered (main.js marks it), and its heading is the expected one.
async function ready(page, heading) {
  await page.waitForSelector("#main[data-ready='true']");
  await page.waitForFunction((t) => [...document.querySelectorAll("h1")].some((e) => e.textContent === t), {}, heading);
}

async function open(page, route, heading) {
  at(`open ${route}`);
  await page.evaluate((r) => {
    delete document.getElementById("main").dataset.ready;
    if (location.hash === r) window.dispatchEvent(new HashChangeEvent("hashchange"));
    else location.hash = r;
  }, route);
  await ready(page, heading);
}

// The control a <label> names, within `scope` (an element handle or the page's document).
async function control(scope, label) {
  const handle = await scope.evaluateHandle((root, text) => {
    const base = root.querySelectorAll ? root : document;
    const found = [...base.querySelectorAll("label")].find((l) => l.textContent === text);
    return found ? document.getElementById(found.htmlFor) : null;
  }, label);
  if (!handle.asElement()) throw new Error(`no control labelled ${label}`);
  return handle.asElement();
}

async function buttonIn(scope, text) {
  const handle = await scope.evaluateHandle((root, t) => {
    const base = root.querySelectorAll ? root : document;
    return [...base.querySelectorAll("button")].find((b) => b.textContent === t && !b.hidden) || null;
  }, text);
  if (!handle.asElement()) throw new Error(`no button ${text}`);
  return handle.asElement();
}

async function tool(page, title) {
  await page.waitForFunction((t) => [...document.querySelectorAll("form.tool h3")].some((e) => e.textContent === t), {}, title);
  return (await page.evaluateHandle((t) => [...document.querySelectorAll("form.tool")]
    .find((f) => f.querySelector("h3").textContent === t), title)).asElement();
}

async function outputOf(page, form, label) {
  await page.waitForFunction((f, l) => [...f.querySelectorAll("label")].some((e) => e.textContent === l), {}, form, label);
  return (await control(form, label)).evaluate((e) => e.value);
}

async function wholePage(page) {
  return page.evaluateHandle(() => document);
}

async function signIn(page, token) {
  at("sign in");
  await page.goto(`${given.url}/ui/`);
  await page.waitForFunction(() => [...document.querySelectorAll("h1")].some((e) => e.textContent === "Sign in"));
  const input = await control(await wholePage(page), "Token");
  await input.type(token);
  await (await buttonIn(await wholePage(page), "Sign in")).click();
  await ready(page, "Overview");
}

async function signOut(page, token) {
  at("sign out");
  await page.click("#sign-out");
  await page.waitForFunction(() => [...document.querySelectorAll("h1")].some((e) => e.textContent === "Sign in"));
  const left = await page.evaluate(() => ({
    storage: [sessionStorage.length, localStorage.length, document.cookie],
    navHidden: document.getElementById("nav").hidden,
    url: location.href,
  }));
  left.tokenOnPage = (await page.content()).includes(token) || left.url.includes(token);
  left.cookies = (await page.cookies()).length;
  await page.reload();
  await page.waitForFunction(() => [...document.querySelectorAll("h1")].some((e) => e.textContent === "Sign in"));
  left.afterReload = await page.evaluate(() => sessionStorage.length);
  return left;
}

async function walkAsRoot(browser) {
  const context = await browser.createBrowserContext();
  const page = await watch(await context.newPage());
  at("the page's headers");
  const response = await page.goto(`${given.url}/ui/`);
  report.headers = response.headers();
  await signIn(page, given.root);
  for (const [route, heading] of given.pages) await open(page, route, heading);

  await open(page, "#/keys", "Keys");
  await page.waitForSelector("a[href='#/keys/transit/vault-enc']");

  await open(page, given.key.route, given.key.heading);
  at("encrypt with the key tool");
  const encrypt = await tool(page, "Encrypt");
  await (await control(encrypt, "Plaintext")).type(given.plaintext);
  await (await buttonIn(encrypt, "Encrypt")).click();
  report.ciphertext = await outputOf(page, encrypt, "Ciphertext");
  at("decrypt with the key tool");
  const decrypt = await tool(page, "Decrypt");
  await (await control(decrypt, "Ciphertext")).type(report.ciphertext);
  await (await buttonIn(decrypt, "Decrypt")).click();
  await page.waitForFunction((f) => [...f.querySelectorAll("button")].some((b) => b.textContent === "Show plaintext"), {}, decrypt);
  await (await control(encrypt, "Plaintext")).evaluate((e) => { e.value = ""; });
  report.plaintextBeforeShown = (await page.content()).includes(given.plaintext);
  await (await buttonIn(decrypt, "Show plaintext")).click();
  report.decrypted = await outputOf(page, decrypt, "plaintext");

  await open(page, "#/tokens", "Tokens");
  at("revoke a token by accessor");
  const accessor = given.revoke;
  await (await page.waitForSelector(`::-p-aria([name="Revoke ${accessor}"][role="button"])`)).click();
  const confirm = await page.waitForSelector("::-p-aria([name=\"Confirm revoking\"][role=\"group\"])");
  report.confirmation = await confirm.evaluate((e) => e.textContent);
  await page.evaluate(() => { delete document.getElementById("main").dataset.ready; });
  await (await buttonIn(confirm, `Yes, revoke ${accessor}`)).click();
  await ready(page, "Tokens");
  report.revokedRowsLeft = await page.evaluate((a) => [...document.querySelectorAll("tr")]
    .filter((r) => r.textContent.includes(a)).length, accessor);

  at("an inline script is refused");
  report.inlineScriptRan = await page.evaluate(async () => {
    const seen = new Promise((resolve) => document.addEventListener("securitypolicyviolation", resolve, { once: true }));
    const script = document.createElement("script");
    script.textContent = "window.inlineScriptRan = true;";
    document.body.append(script); // an inline script allowed runs here, before append returns
    if (window.inlineScriptRan === true) return true;
    await seen;
    return false;
  });
  report.integrity = await page.evaluate(() => [...document.querySelectorAll("script[src], link[rel=stylesheet], link[rel=modulepreload]")]
    .map((e) => e.integrity.startsWith("sha384-")));

  at("phone size");
  await page.setViewport(given.phone);
  report.phoneWidths = {};
  for (const [route, heading] of given.pages) {
    await open(page, route, heading);
    report.phoneWidths[route] = await page.evaluate(() => document.documentElement.scrollWidth);
  }

  report.root = await signOut(page, given.root);
  await context.close();
}

async function walkAsLimited(browser) {
  const context = await browser.createBrowserContext();
  const page = await watch(await context.newPage());
  await signIn(page, given.limited);
  at("overview hides the metrics");
  await waitForText(page, "p.hidden-why", "Hidden: this token's policies do not grant 'read' on sys/metrics.");
  for (const [route, heading] of given.pages) await open(page, route, heading);
  await open(page, given.limitedKey.route, given.limitedKey.heading);
  at("the limited key's page hides Rotate");
  await waitForText(page, "p.hidden-why", `do not grant 'update' on ${given.limitedKey.rotatePath}.`);
  report.limitedRotateButtons = await page.evaluate(() => [...document.querySelectorAll("button")].filter((b) => b.textContent === "Rotate").length);
  await open(page, "#/tokens", "Tokens");
  at("the tokens page hides the list");
  await waitForText(page, "p.hidden-why", "on auth/token/accessors.");
  report.limited = await signOut(page, given.limited);
  await context.close();
}

// Firefox's own services must not reach out. Remote settings (which it asks for at start) go to a loopback port
// nothing listens on (the pref is honoured with MOZ_REMOTE_SETTINGS_DEVTOOLS set), and every other request not
// to the loopback goes to a proxy there, never directly (the loopback itself is never proxied): the browser
// resolves no name and connects nowhere but to the service under test.
const DEAD_PROXY = { host: "127.0.0.1", port: 9 };
const PREFS = {
  "services.settings.server": `http://${DEAD_PROXY.host}:${DEAD_PROXY.port}/v1`,
  "network.proxy.type": 1,
  "network.proxy.http": DEAD_PROXY.host,
  "network.proxy.http_port": DEAD_PROXY.port,
  "network.proxy.ssl": DEAD_PROXY.host,
  "network.proxy.ssl_port": DEAD_PROXY.port,
  "network.proxy.share_proxy_settings": true,
  "network.proxy.allow_hijacking_localhost": false,
  "network.proxy.failover_direct": false,
  "network.trr.mode": 5,
  "network.dns.disablePrefetch": true,
  "network.prefetch-next": false,
  "network.captive-portal-service.enabled": false,
  "network.connectivity-service.enabled": false,
  "toolkit.telemetry.enabled": false,
  "datareporting.policy.dataSubmissionEnabled": false,
};

let browser;
try {
  browser = await puppeteer.launch({
    browser: "firefox", executablePath: given.firefox, headless: true, timeout: 60_000, protocolTimeout: 60_000,
    extraPrefsFirefox: PREFS, env: { ...process.env, MOZ_REMOTE_SETTINGS_DEVTOOLS: "1" },
  });
  report.browser = await browser.version();
  await walkAsRoot(browser);
  await walkAsLimited(browser);
  at("done");
} catch (e) {
  report.failedAt = step;
  report.problem = String(e && e.stack ? e.stack : e);
  process.exitCode = 1;
} finally {
  if (browser) await browser.close();
}
process.stdout.write(JSON.stringify(report));
