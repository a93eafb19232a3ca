// items.js: the synchronous CRUD API under a constant arrival rate. Each
// iteration creates an item, reads it, lists the newest, updates it and
// deletes it (so the collection does not grow), all through nginx.
//
//   k6 run loadtest/items.js                        # 20 iterations/s (5 requests each) for 1m
//   RATE=50 DURATION=2m k6 run loadtest/items.js
//
// RATE iterations per second; DURATION; VUS pre-allocated; MAX_VUS.
import http from 'k6/http';
import { check } from 'k6';
import { BASE_URL, ERROR_THRESHOLDS, JSON_HEADERS, SUMMARY_TREND_STATS, envNumber, envString } from './lib.js';

export const options = {
  scenarios: {
    items: {
      executor: 'constant-arrival-rate',
      rate: envNumber('RATE', 20),
      timeUnit: '1s',
      duration: envString('DURATION', '1m'),
      preAllocatedVUs: envNumber('VUS', 20),
      maxVUs: envNumber('MAX_VUS', 200),
    },
  },
  thresholds: Object.assign({}, ERROR_THRESHOLDS, {
    // Always true: they only make the summary show each operation's
    // latency. The SLO for the CRUD API is the error ratio above.
    'http_req_duration{op:create}': ['p(99)>=0'],
    'http_req_duration{op:get}': ['p(99)>=0'],
    'http_req_duration{op:list}': ['p(99)>=0'],
    'http_req_duration{op:update}': ['p(99)>=0'],
    'http_req_duration{op:delete}': ['p(99)>=0'],
  }),
  summaryTrendStats: SUMMARY_TREND_STATS,
};

function params(op, name) {
  return { headers: JSON_HEADERS, tags: { op: op, name: name } };
}

export default function () {
  const name = `k6 item ${__VU}-${__ITER}`;
  const created = http.post(`${BASE_URL}/api/items`,
    JSON.stringify({ name: name, description: 'load test', metadata: { vu: __VU, iter: __ITER } }),
    params('create', 'POST /api/items'));
  if (!check(created, { 'create answered 201': (r) => r.status === 201 })) return;
  const id = created.json('id');
  const path = `${BASE_URL}/api/items/${id}`;

  const got = http.get(path, params('get', 'GET /api/items/{id}'));
  check(got, { 'get returns the item': (r) => r.status === 200 && r.json('name') === name });

  const listed = http.get(`${BASE_URL}/api/items?skip=0&limit=20`, params('list', 'GET /api/items'));
  check(listed, { 'list answered 200': (r) => r.status === 200 && Array.isArray(r.json()) });

  const updated = http.put(path, JSON.stringify({ description: 'updated by k6' }), params('update', 'PUT /api/items/{id}'));
  check(updated, { 'update applies': (r) => r.status === 200 && r.json('description') === 'updated by k6' });

  const deleted = http.del(path, null, params('delete', 'DELETE /api/items/{id}'));
  check(deleted, { 'delete answered 2xx': (r) => r.status === 200 || r.status === 204 });
}
