// e2e.js: TASKS tasks submitted through nginx, each polled until SUCCESS.
// A task that was accepted (202) but does not reach SUCCESS within
// TASK_TIMEOUT seconds counts in tasks_lost, whose threshold is count==0:
// one lost task fails the run. A submit that never got a 202 (after
// retries with its Idempotency-Key) counts in tasks_not_accepted, also 0.
//
//   k6 run loadtest/e2e.js                          # 300 tasks, 20 VUs
//   TASKS=2000 VUS=50 TASK_TIMEOUT=300 k6 run loadtest/e2e.js
//
// TASKS; VUS (clients working through them); ITERATIONS per task (default
// 1; a task takes ITERATIONS x the stack's HEAVY_TASK_DELAY); TASK_TIMEOUT
// seconds per task (default 120); POLL seconds between polls (default 0.25).
import { SUMMARY_TREND_STATS, TASK_THRESHOLDS, envNumber, envString, followTask, submitWithRetry, taskCounters } from './lib.js';

const TASKS = envNumber('TASKS', 300);
const ITERATIONS = envNumber('ITERATIONS', 1);
const TASK_TIMEOUT = envNumber('TASK_TIMEOUT', 120);
const POLL = envNumber('POLL', 0.25);
const PRIORITY = envString('PRIORITY', 'normal');

const counters = taskCounters();

export const options = {
  scenarios: {
    e2e: {
      executor: 'shared-iterations',
      vus: Math.min(envNumber('VUS', 20), TASKS),
      iterations: TASKS,
      maxDuration: `${Math.ceil(TASK_TIMEOUT + (TASKS / 10) + 60)}s`,
    },
  },
  thresholds: TASK_THRESHOLDS,
  summaryTrendStats: SUMMARY_TREND_STATS,
};

export default function () {
  const started = Date.now();
  const { res, id } = submitWithRetry(ITERATIONS, PRIORITY, 8);
  followTask(counters, res, id, started, TASK_TIMEOUT, POLL);
}
