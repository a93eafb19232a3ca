// errand's console: the little that needs a script. The pages work
// without it; with it a task page follows its task live, and forms marked
// data-confirm ask first.
"use strict";

document.addEventListener("submit", (e) => {
  const question = e.target.dataset && e.target.dataset.confirm;
  if (question && !window.confirm(question)) e.preventDefault();
});

const finalStates = new Set(["SUCCESS", "FAILURE", "REVOKED"]);

// A page of something still running (a workflow) marked data-reload is
// drawn again by the server every so often, until it has ended.
for (const el of document.querySelectorAll("[data-reload]")) {
  setTimeout(() => location.reload(), Number(el.dataset.reload) || 2000);
}

// followTask updates a task page from the task's event stream; when the
// task ends, it redraws the page's task section from the server, so the
// result, the timeline and the actions are the server's own.
function followTask(section) {
  const id = section.dataset.task;
  const events = new EventSource("/ui/tasks/" + encodeURIComponent(id) + "/events");
  const field = (name) => section.querySelector('[data-field="' + name + '"]');
  // The browser reconnects by itself after a dropped connection; a stream
  // it gives up on (a session that ended, a server that refuses) is said.
  events.onerror = () => {
    if (events.readyState === EventSource.CLOSED) field("stream-error").hidden = false;
  };
  events.addEventListener("status", async (e) => {
    const task = JSON.parse(e.data);
    const status = field("status");
    status.textContent = task.status;
    status.className = "state state-" + task.status.toLowerCase();
    const p = task.progress || {};
    const percent = Math.max(0, Math.min(100, p.progress || 0));
    field("progress").value = percent;
    field("progress").textContent = percent + "%";
    field("progress-text").textContent = percent + "%" + (p.status ? " · " + p.status : "");
    field("attempts").textContent = task.attempts;
    if (task.started_at) addToTimeline(field("timeline"), "Started", task.started_at);
    if (finalStates.has(task.status)) {
      events.close();
      await redraw(section);
    }
  });
}

// addToTimeline adds an entry the page did not have when it was drawn, as
// the server would have drawn it.
function addToTimeline(timeline, what, at) {
  if (timeline.querySelector('[data-what="' + what + '"]')) return;
  const shown = new Date(at).toISOString().replace("T", " ").slice(0, 19) + " UTC";
  const item = document.createElement("li");
  item.dataset.what = what;
  const time = document.createElement("time");
  time.dateTime = new Date(at).toISOString();
  time.textContent = shown;
  item.append(time, " " + what);
  timeline.append(item);
}

async function redraw(section) {
  const answer = await fetch(location.pathname, { credentials: "same-origin" });
  if (!answer.ok) {
    section.querySelector('[data-field="stream-error"]').hidden = false;
    return;
  }
  const page = new DOMParser().parseFromString(await answer.text(), "text/html");
  const fresh = page.getElementById("task");
  if (fresh) section.replaceWith(fresh);
}

const live = document.querySelector("section.task[data-live]");
if (live) followTask(live);
