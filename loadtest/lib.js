// Shared pieces of the errand load tests: settings from the environment,
// the SLO thresholds, and the submit/poll calls every script makes.
//
// No remote imports: these scripts run on machines without network access.
import http from 'k6/http';
import { check, sleep } from 'k6';
import { Counter, Trend } from 'k6/metrics';

// BASE_URL is nginx in front of the API processes (scripts/stack up).
export const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');

export function envString(name, fallback) {
  const v = __ENV[name];
  return v === undefined || v === '' ? fallback : v;
}

export function envNumber(name, fallback) {
  const v = envString(name, '');
  if (v === '') return fallback;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new Error(`${name}=${v}: not a number`);
  return n;
}

// The SLOs prometheus/alerts.yml watches, as k6 thresholds:
// - error ratio: under 1 % of requests fail (ErrandAPIErrorRatioHigh pages
//   at 5 % 5xx; the load test holds the stricter budget);
// - submit latency: POST /api/async/process answers within 250 ms at p95
//   and 500 ms at p99 (ErrandSubmitLatencySLOBurn burns the 250 ms budget).
// A failed threshold makes `k6 run` exit 99.
export const ERROR_THRESHOLDS = {
  http_req_failed: ['rate<0.01'],
  checks: ['rate>0.99'],
};
export const SUBMIT_THRESHOLDS = {
  'http_req_duration{endpoint:submit}': ['p(95)<250', 'p(99)<500'],
};

export const JSON_HEADERS = { 'Content-Type': 'application/json' };

export const SUMMARY_TREND_STATS = ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'];

// Final task states; every other state (PENDING, PROGRESS, RETRY) is in flight.
export const FINAL_STATES = ['SUCCESS', 'FAILURE'];

// submitTask posts one process_heavy_task and returns the response and the
// task id (null unless the answer was 202 with one). With idempotencyKey, a
// retry of a submit whose answer was lost cannot queue the task twice.
export function submitTask(iterations, priority, idempotencyKey) {
  const headers = Object.assign({}, JSON_HEADERS);
  if (idempotencyKey) headers['Idempotency-Key'] = idempotencyKey;
  const body = JSON.stringify({ data: `k6 ${__VU}-${__ITER}`, iterations: iterations, priority: priority });
  const res = http.post(`${BASE_URL}/api/async/process`, body, { headers: headers, tags: { endpoint: 'submit' } });
  let id = null;
  if (res.status === 202) {
    try {
      id = res.json('task_id') || null;
    } catch (e) {
      id = null;
    }
  }
  return { res: res, id: id };
}

// submitWithRetry submits until a 202, retrying connection errors, 502, 503
// and 504 (what nginx and errand answer while an instance or dependency is
// away) with the same Idempotency-Key, at most `attempts` times.
export function submitWithRetry(iterations, priority, attempts) {
  const key = `k6-${__VU}-${__ITER}-${Date.now()}-${Math.random().toString(36).slice(2, 10)}`;
  let last = null;
  for (let i = 0; i < attempts; i++) {
    last = submitTask(iterations, priority, key);
    if (last.id) return last;
    if (!(last.res.status === 0 || last.res.status === 502 || last.res.status === 503 || last.res.status === 504)) return last;
    sleep(Math.min(0.05 * 2 ** i, 1));
  }
  return last;
}

// taskStatus reads one task's status: { code, status } (status null when
// the answer was not 200).
export function taskStatus(id) {
  const res = http.get(`${BASE_URL}/api/async/status/${id}`, { tags: { endpoint: 'status', name: 'GET /api/async/status/{task_id}' } });
  let status = null;
  if (res.status === 200) {
    try {
      status = res.json('status');
    } catch (e) {
      status = null;
    }
  }
  return { code: res.status, status: status };
}

// waitForFinal polls a task every pollSeconds until it is SUCCESS or
// FAILURE or timeoutSeconds have passed, and returns its last status
// ('UNKNOWN' when errand never answered 200 for it).
export function waitForFinal(id, timeoutSeconds, pollSeconds) {
  const deadline = Date.now() + timeoutSeconds * 1000;
  let last = 'UNKNOWN';
  for (;;) {
    const st = taskStatus(id);
    if (st.status) last = st.status;
    if (FINAL_STATES.indexOf(last) >= 0 || Date.now() >= deadline) return last;
    sleep(pollSeconds);
  }
}

// taskCounters are the end-to-end metrics of e2e.js and soak.js, whose
// tasks_lost and tasks_not_accepted thresholds say no task went missing.
// Call it in a script's init code: k6 creates metrics only there.
export function taskCounters() {
  return {
    accepted: new Counter('tasks_accepted'),
    succeeded: new Counter('tasks_succeeded'),
    failed: new Counter('tasks_failed'), // ended FAILURE
    lost: new Counter('tasks_lost'), // accepted, not SUCCESS in time (FAILURE included)
    notAccepted: new Counter('tasks_not_accepted'),
    done: new Trend('task_done_ms', true), // submit to SUCCESS seen
  };
}

// TASK_THRESHOLDS are the SLO thresholds plus the taskCounters' promise:
// no task lost, none refused.
export const TASK_THRESHOLDS = Object.assign({}, ERROR_THRESHOLDS, SUBMIT_THRESHOLDS, {
  tasks_lost: ['count==0'],
  tasks_not_accepted: ['count==0'],
});

// followTask counts one submit (res and id from submitWithRetry, made at
// started) and, if it was accepted, polls the task until it ends or
// timeoutSeconds pass. onAccepted, if given, is called with the id first.
export function followTask(counters, res, id, started, timeoutSeconds, pollSeconds, onAccepted) {
  // Every counter gets a sample each iteration, so the count==0 thresholds
  // are judged on a run that happened, never on a metric with no data.
  counters.lost.add(0);
  counters.notAccepted.add(0);
  if (!check(res, { 'submit answered 202 with a task id': () => id !== null })) {
    counters.notAccepted.add(1);
    return;
  }
  counters.accepted.add(1);
  if (onAccepted) onAccepted(id);
  const final = waitForFinal(id, timeoutSeconds, pollSeconds);
  check(final, { 'task reached SUCCESS': (s) => s === 'SUCCESS' });
  if (final === 'SUCCESS') {
    counters.succeeded.add(1);
    counters.done.add(Date.now() - started);
    return;
  }
  if (final === 'FAILURE') counters.failed.add(1);
  counters.lost.add(1);
  console.error(`task ${id} is ${final} after ${timeoutSeconds}s, want SUCCESS`);
}
