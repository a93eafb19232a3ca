// submit.js: a constant arrival rate of POST /api/async/process through
// nginx, held to the submit SLO (p95 < 250 ms, p99 < 500 ms, < 1 % errors).
// Open model: k6 starts RATE submits a second whether or not earlier ones
// have answered, so a slow API shows up as latency, not as a lower rate.
//
//   k6 run loadtest/submit.js                                  # 50/s for 1m
//   RATE=200 DURATION=2m BASE_URL=http://127.0.0.1:8080 k6 run loadtest/submit.js
//
// RATE submits per second; DURATION; ITERATIONS per task (default 1: the
// test is about the API, not the workers); PRIORITY low|normal|high;
// VUS pre-allocated and MAX_VUS at most (raise MAX_VUS when k6 reports
// dropped_iterations).
import { check } from 'k6';
import { ERROR_THRESHOLDS, SUBMIT_THRESHOLDS, SUMMARY_TREND_STATS, envNumber, envString, submitTask } from './lib.js';

const RATE = envNumber('RATE', 50);
const ITERATIONS = envNumber('ITERATIONS', 1);
const PRIORITY = envString('PRIORITY', 'normal');

export const options = {
  scenarios: {
    submit: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: envString('DURATION', '1m'),
      preAllocatedVUs: envNumber('VUS', 20),
      maxVUs: envNumber('MAX_VUS', 200),
    },
  },
  thresholds: Object.assign({}, ERROR_THRESHOLDS, SUBMIT_THRESHOLDS),
  summaryTrendStats: SUMMARY_TREND_STATS,
};

export default function () {
  const { res, id } = submitTask(ITERATIONS, PRIORITY);
  check(res, {
    'submit answered 202': (r) => r.status === 202,
    'submit returned a task id': () => id !== null,
  });
}
