// console-keys.mjs signs in to errand's console with an API key, as a
// person would, and reports what the console let it see and do: the
// redirect to the sign-in page, a wrong key refused, only the key's own
// tasks listed, another key's task not found, the cookies' flags, and a
// form posted without its CSRF token refused.
//
//   node tools/browser/console-keys.mjs BASE_URL SCREENSHOT_DIR KEY OWN_TASK OTHER_TASK
import { chromium } from "playwright-core";

const [base, shots, key, own, other] = process.argv.slice(2);
if (!base || !shots || !key || !own || !other) {
  console.error("usage: node console-keys.mjs BASE_URL SCREENSHOT_DIR KEY OWN_TASK OTHER_TASK");
  process.exit(2);
}
const origin = new URL(base).origin;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
    "--no-first-run", "--disable-component-update", "--disable-sync"],
});
const outside = [];
const errors = [];
const seen = {};
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  await context.route("**/*", (route) => {
    const url = route.request().url();
    if (new URL(url).origin === origin || url.startsWith("data:")) return route.continue();
    outside.push(url);
    return route.abort();
  });
  const page = await context.newPage();
  page.setDefaultTimeout(30000);
  page.on("pageerror", (e) => errors.push(String(e)));

  await page.goto(base + "/ui/tasks");
  seen.redirected = page.url();
  await page.getByLabel("API key").fill("not-a-key");
  let answer = page.waitForResponse((r) => r.url().endsWith("/ui/login") && r.request().method() === "POST");
  await page.getByRole("button", { name: "Sign in" }).click();
  seen.wrongKey = { status: (await answer).status(), alert: await page.getByRole("alert").innerText() };
  await page.screenshot({ path: shots + "/console-login.png" });

  await page.getByLabel("API key").fill(key);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(/\/ui\/tasks$/);
  seen.listed = await page.locator("table.tasks tbody td:first-child a").allInnerTexts();
  seen.cookies = (await context.cookies()).map((c) => ({ name: c.name, httpOnly: c.httpOnly, sameSite: c.sameSite, path: c.path }));

  answer = page.waitForResponse((r) => r.url().includes("/ui/tasks/" + other));
  await page.goto(base + "/ui/tasks/" + encodeURIComponent(other));
  seen.otherTask = { status: (await answer).status(), heading: await page.locator("h1").innerText() };
  await page.goto(base + "/ui/tasks/" + encodeURIComponent(own));
  seen.ownTask = await page.locator("h1").innerText();

  // A POST that did not come from a console form: no CSRF token.
  seen.forged = await page.evaluate(async (id) => {
    const r = await fetch("/ui/tasks/" + encodeURIComponent(id) + "/cancel", {
      method: "POST", headers: { "Content-Type": "application/x-www-form-urlencoded" }, body: "confirm=yes",
    });
    return r.status;
  }, own);

  await page.getByRole("button", { name: "Sign out" }).click();
  await page.waitForURL(/\/ui\/login$/);
  await page.goto(base + "/ui/tasks");
  seen.afterSignOut = page.url();
  console.log(JSON.stringify({ ...seen, outside, errors }));
} finally {
  await browser.close();
}
