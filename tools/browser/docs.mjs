// docs.mjs opens errand's /docs in headless Chromium as a person would,
// runs "Try it out" on POST /api/tasks, and prints the answer's task id.
// Every request the page makes to anything but errand is refused and
// reported: the reference must work with no network.
//
//   node tools/browser/docs.mjs http://127.0.0.1:8080 /tmp/shots
import { chromium } from "playwright-core";

const [base, shots] = process.argv.slice(2);
if (!base || !shots) {
  console.error("usage: node docs.mjs BASE_URL SCREENSHOT_DIR");
  process.exit(2);
}
const origin = new URL(base).origin;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
    "--no-first-run", "--disable-component-update", "--disable-sync"],
});
const outside = [];
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await page.route("**/*", (route) => {
    const url = route.request().url();
    if (new URL(url).origin === origin || url.startsWith("data:")) return route.continue();
    outside.push(url);
    return route.abort();
  });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });

  await page.goto(base + "/docs", { waitUntil: "networkidle" });
  await page.locator(".opblock-tag-section").first().waitFor();
  await page.screenshot({ path: shots + "/docs.png" });

  const op = page.locator("#operations-Tasks-postApiTasks");
  await op.locator(".opblock-summary").click();
  // "Try it out" is on from the start (tryItOutEnabled); click it if not.
  const tryOut = op.getByRole("button", { name: "Try it out", exact: true });
  if ((await tryOut.count()) > 0) await tryOut.click();
  const body = op.locator("textarea.body-param__text");
  await body.fill(JSON.stringify({ type: "process_heavy_task", args: { data: "from the docs page", iterations: 2 } }));
  await op.locator("button.execute").click();
  const status = op.locator(".live-responses-table .response .response-col_status").first();
  await status.waitFor();
  const code = (await status.innerText()).trim();
  const answer = await op.locator(".live-responses-table .response-col_description pre").first().innerText();
  await op.scrollIntoViewIfNeeded();
  await page.screenshot({ path: shots + "/docs-try-it-out.png", fullPage: false });
  console.log(JSON.stringify({ status: code, answer: JSON.parse(answer), outside, errors }));
} finally {
  await browser.close();
}
