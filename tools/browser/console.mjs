// console.mjs uses errand's console at /ui/ in headless Chromium as a
// person would: it submits a task from the form and watches it reach
// SUCCESS on its page without a reload, cancels a running task, retries a
// failed one, filters the task list and finds a task by id. It prints
// what it saw as JSON for the Go test to judge, and takes screenshots.
// Every request to anything but errand is refused and reported.
//
//   node tools/browser/console.mjs http://127.0.0.1:8080 /tmp/shots
import { chromium } from "playwright-core";

const [base, shots] = process.argv.slice(2);
if (!base || !shots) {
  console.error("usage: node console.mjs BASE_URL SCREENSHOT_DIR");
  process.exit(2);
}
const origin = new URL(base).origin;
const timeout = 30000;

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
  page.setDefaultTimeout(timeout);
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("dialog", (d) => d.accept());
  const taskIdOf = (url) => decodeURIComponent(new URL(url).pathname.split("/").pop());

  // Submit from the form: choosing the type redraws the form for it.
  await page.goto(base + "/ui/submit");
  await page.getByLabel("Task type", { exact: true }).selectOption("process_heavy_task");
  await page.getByRole("button", { name: "Choose" }).click();
  await page.getByLabel("data").waitFor();
  await page.getByLabel("data").fill("from the console");
  await page.getByLabel("iterations").fill("40");
  await page.getByRole("button", { name: "Submit", exact: true }).click();
  await page.waitForURL(/\/ui\/tasks\/[^/?]+\?done=submit$/);
  const watched = taskIdOf(page.url());
  let navigations = 0;
  page.on("framenavigated", (f) => { if (f === page.mainFrame()) navigations++; });
  const status = page.locator('#task [data-field="status"]');
  await page.waitForFunction(() => {
    const p = document.querySelector('#task [data-field="progress"]');
    return p && p.value >= 20 && p.value < 100;
  });
  const midway = {
    status: await status.innerText(),
    progress: await page.locator('#task [data-field="progress"]').evaluate((p) => p.value),
    timeline: await page.locator('#task [data-field="timeline"] li').allInnerTexts(),
  };
  await page.screenshot({ path: shots + "/console-task.png" });
  await page.locator("#task pre[data-field=result]").waitFor();
  seen.watch = {
    task_id: watched, midway, final: await status.innerText(), navigations,
    result: await page.locator("#task pre[data-field=result]").innerText(),
  };

  // Cancel a running task from its page.
  await page.goto(base + "/ui/submit?type=process_heavy_task");
  await page.getByLabel("data").fill("to be cancelled");
  await page.getByLabel("iterations").fill("1000");
  await page.getByRole("button", { name: "Submit", exact: true }).click();
  await page.waitForURL(/done=submit$/);
  const cancelled = taskIdOf(page.url());
  await page.locator('#task [data-field="status"]', { hasText: "PROGRESS" }).waitFor();
  await page.getByRole("button", { name: "Cancel task" }).click();
  await page.waitForURL(/done=cancel$/);
  await page.locator('#task [data-field="status"]', { hasText: "REVOKED" }).waitFor();
  seen.cancel = { task_id: cancelled, final: await status.innerText(), notice: await page.locator(".notice.ok").innerText() };

  // A task that fails (its file does not exist), then retried.
  await page.goto(base + "/ui/submit?type=process_image");
  await page.getByLabel("file_id").fill("000000000000000000000000");
  await page.getByRole("button", { name: "Submit", exact: true }).click();
  await page.waitForURL(/done=submit$/);
  const failed = taskIdOf(page.url());
  await page.locator('#task [data-field="status"]', { hasText: "FAILURE" }).waitFor();
  await page.getByRole("button", { name: "Retry as a new task" }).click();
  await page.waitForURL(/done=retry$/);
  const retried = taskIdOf(page.url());
  await page.locator('#task [data-field="status"]', { hasText: "FAILURE" }).waitFor();
  seen.retry = { failed, retried, error: await page.locator("#task pre.error").innerText() };

  // A submit the API refuses: the form shows why, next to the field. The
  // browser logs the 422 answer as an error; that one is expected.
  const errorsBefore = errors.length;
  await page.goto(base + "/ui/submit?type=process_heavy_task");
  await page.getByLabel("data").fill("x");
  await page.getByLabel("iterations").fill("5000");
  await page.getByRole("button", { name: "Submit", exact: true }).click();
  await page.locator(".field-error").first().waitFor();
  seen.refused = { url: page.url(), message: await page.locator(".field-error").first().innerText() };
  errors.splice(errorsBefore, errors.length - errorsBefore,
    ...errors.slice(errorsBefore).filter((e) => !e.includes("status of 422")));

  // Filter the list to the failures, then find a task by its id.
  await page.goto(base + "/ui/tasks");
  await page.getByLabel("State", { exact: true }).selectOption("FAILURE");
  await page.getByRole("button", { name: "Filter" }).click();
  await page.waitForURL(/status=FAILURE/);
  const rows = page.locator("table.tasks tbody tr");
  seen.filter = {
    states: await rows.locator(".state").allInnerTexts(),
    ids: await rows.locator("td:first-child a").allInnerTexts(),
  };
  await page.getByLabel("Find a task by id").fill(watched);
  await page.getByRole("button", { name: "Open" }).click();
  await page.waitForURL(new RegExp("/ui/tasks/" + watched + "$"));
  seen.search = { url: page.url() };

  // The dead letters of the failed tasks: one requeued, then all purged
  // once the box is ticked.
  await page.goto(base + "/ui/dead-letters");
  const deadRows = page.locator("table.tasks tbody tr");
  seen.dead = {
    ids: await deadRows.locator("td:first-child a").allInnerTexts(),
    reasons: await deadRows.locator("td.note").allInnerTexts(),
  };
  await page.screenshot({ path: shots + "/console-dead-letters.png" });
  await page.getByRole("button", { name: "Requeue " + failed }).click();
  await page.waitForURL(/done=requeue$/);
  seen.dead.requeued = taskIdOf(page.url());
  await page.locator('#task [data-field="status"]', { hasText: "FAILURE" }).waitFor();
  await page.goto(base + "/ui/dead-letters");
  await page.getByRole("button", { name: "Purge dead letters" }).click();
  seen.dead.unticked = page.url();
  await page.getByLabel(/removed for good/).check();
  await page.getByRole("button", { name: "Purge dead letters" }).click();
  await page.waitForURL(/purged=\d+$/);
  seen.dead.purged = await page.locator(".notice.ok").innerText();
  seen.dead.left = await page.locator("table.tasks tbody tr").count();

  await page.goto(base + "/ui/");
  await page.locator(".cards").waitFor();
  await page.screenshot({ path: shots + "/console-overview.png" });
  seen.overview = { failures: await page.locator('section[aria-labelledby="failures"] table tbody tr').count() };

  // A workflow, drawn as its steps: submitted through the API, followed on
  // its page (which draws itself again until the workflow ends); a step
  // leads to its task's page, which leads back.
  const heavy = (data, iterations) => ({ type: "process_heavy_task", args: { data, iterations } });
  const submitted = await page.evaluate(async (body) => {
    const answer = await fetch("/api/workflows", { method: "POST", headers: { "Content-Type": "application/json" }, body });
    return answer.json();
  }, JSON.stringify({ chain: [heavy("w1", 1), { group: [heavy("w2", 1), heavy("w3", 3)], then: heavy("w4", 1) }] }));
  await page.goto(base + "/ui/workflows/" + encodeURIComponent(submitted.workflow_id));
  await page.locator("section.workflow:not([data-reload])").waitFor();
  await page.screenshot({ path: shots + "/console-workflow.png" });
  seen.workflow = {
    id: submitted.workflow_id,
    state: await page.locator(".facts .state").first().innerText(),
    steps: await page.locator(".flow-task .flow-path").allInnerTexts(),
    states: await page.locator(".flow-task .state").allInnerTexts(),
    groups: await page.locator(".flow-group").count(),
  };
  await page.locator(".flow-task").first().click();
  await page.locator("#task").waitFor();
  seen.workflow.stepPage = page.url();
  seen.workflow.back = await page.getByRole("link", { name: submitted.workflow_id }).getAttribute("href");

  // A phone's width: the pages stay usable.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(base + "/ui/tasks/" + encodeURIComponent(watched));
  await page.screenshot({ path: shots + "/console-phone.png", fullPage: true });
  seen.phone = { scrollWidth: await page.evaluate(() => document.documentElement.scrollWidth) };
  await page.goto(base + "/ui/workflows/" + encodeURIComponent(submitted.workflow_id));
  await page.screenshot({ path: shots + "/console-workflow-phone.png", fullPage: true });
  seen.phone.workflowScrollWidth = await page.evaluate(() => document.documentElement.scrollWidth);

  console.log(JSON.stringify({ ...seen, outside, errors }));
} finally {
  await browser.close();
}
