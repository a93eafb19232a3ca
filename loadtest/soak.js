// soak.js: a long, steady load like production's: RATE submits a second
// for DURATION, each task polled until it ends, with the same SLO
// thresholds as submit.js and e2e.js's tasks_lost == 0.
//
// Every accepted task id is logged as a line "accepted_task_id=<id>", so a
// run can be audited against MongoDB afterwards with scripts/tally:
//
//   k6 run --console-output=/tmp/soak-ids.log loadtest/soak.js
//   scripts/tally check --ids /tmp/soak-ids.log
//
//   RATE=20 DURATION=2h k6 run --console-output=/tmp/soak-ids.log loadtest/soak.js
//
// RATE submits per second (default 5); DURATION (default 30m); ITERATIONS
// per task (default 1); TASK_TIMEOUT seconds per task (default 300); POLL
// seconds between polls (default 1); LOG_IDS=0 turns the id lines off;
// VUS / MAX_VUS (a VU is busy for a task's whole life: MAX_VUS must exceed
// RATE x the task's seconds, else k6 reports dropped_iterations).
import { SUMMARY_TREND_STATS, TASK_THRESHOLDS, envNumber, envString, followTask, submitWithRetry, taskCounters } from './lib.js';

const ITERATIONS = envNumber('ITERATIONS', 1);
const TASK_TIMEOUT = envNumber('TASK_TIMEOUT', 300);
const POLL = envNumber('POLL', 1);
const LOG_IDS = envString('LOG_IDS', '1') !== '0';

const counters = taskCounters();

export const options = {
  scenarios: {
    soak: {
      executor: 'constant-arrival-rate',
      rate: envNumber('RATE', 5),
      timeUnit: '1s',
      duration: envString('DURATION', '30m'),
      preAllocatedVUs: envNumber('VUS', 20),
      maxVUs: envNumber('MAX_VUS', 300),
      // Tasks submitted near the end still get their full time to finish.
      gracefulStop: `${TASK_TIMEOUT + 10}s`,
    },
  },
  thresholds: TASK_THRESHOLDS,
  summaryTrendStats: SUMMARY_TREND_STATS,
};

export default function () {
  const started = Date.now();
  const { res, id } = submitWithRetry(ITERATIONS, 'normal', 8);
  followTask(counters, res, id, started, TASK_TIMEOUT, POLL, (accepted) => {
    if (LOG_IDS) console.log(`accepted_task_id=${accepted}`);
  });
}
