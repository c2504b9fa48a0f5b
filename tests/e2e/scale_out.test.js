// Several mcpeek instances sharing state through a real Redis (docs/scaling.md,
// docs/configuration.md `shared_state`), in front of two stateful upstreams
// (lib/stateful-upstream.js: a request reaching a server that did not issue its session gets
// that server's 404). Both instances run the same flags, as replicas behind a load balancer
// would; the test plays the load balancer by sending each request to the instance it picks.

import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import test from 'node:test';
import {
    DIRECT, expectFields, freePort, POST_HEADERS, request, sleep, startEverything, startMcpeek,
} from './lib/harness.js';
import { sampleValue, scrape, waitUntil } from './lib/ops.js';
import { redisCli, startRedis } from './lib/redis.js';
import { startStatefulUpstream } from './lib/stateful-upstream.js';

const skip = DIRECT ? 'shared state is mcpeek\'s' : false;

const initBody = (id, conv) => JSON.stringify({
    jsonrpc: '2.0', id, method: 'initialize',
    params: {
        protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'e2e', version: '1' },
        _meta: { 'openai/session': conv, 'openai/subject': 'user-1' },
    },
});
const callBody = (id, subject) => JSON.stringify({
    jsonrpc: '2.0', id, method: 'tools/call',
    params: { name: 'probe', arguments: {}, ...(subject ? { _meta: { 'openai/subject': subject } } : {}) },
});

// Two mcpeek instances with the same flags in front of upstreams A and B, sharing `redis`.
async function fleet(t, { args = [], redis } = {}) {
    const a = await startStatefulUpstream(t, 'A');
    const b = await startStatefulUpstream(t, 'B');
    redis = redis ?? await startRedis(t);
    const common = ['--upstream', b.url, '--shared-state', redis.url, '--workers', '2',
        '--upstream-fail-timeout', '5s', ...args];
    const admin1 = await freePort();
    const admin2 = await freePort();
    const p1 = await startMcpeek(t, a.url, { adminPort: admin1, args: common });
    const p2 = await startMcpeek(t, a.url, { adminPort: admin2, args: common });
    // connected: every worker of both instances reports its Redis connection up
    for (const port of [admin1, admin2]) {
        await waitUntil(async () => sampleValue((await scrape(port)).samples, 'mcpeek_shared_state_connections') === 2,
            { describe: () => `instance with admin ${port} did not connect to Redis` });
    }
    return { a, b, redis, p1, p2, admin1, admin2 };
}

async function init(proxy, i, conv = `conv-${i}`) {
    const res = await request(proxy.url, { method: 'POST', headers: POST_HEADERS, body: initBody(i, conv) });
    assert.equal(res.status, 200, `initialize ${i}: ${res.text()}`);
    return { sid: res.headers['mcp-session-id'], servedBy: res.json().result.served_by, conv };
}

const withSession = (sid, extra = POST_HEADERS) => [...extra, ['Mcp-Session-Id', sid]];

test('a session initialized through one instance is served through the other', { skip }, async (t) => {
    const { a, b, redis, p1, p2 } = await fleet(t);
    const sessions = [];
    for (let i = 0; i < 30; i++) sessions.push(await init(i % 2 ? p2 : p1, i));
    const onA = sessions.filter((s) => s.servedBy === 'A').length;
    assert.ok(onA >= 6 && onA <= 24, `new sessions spread over both upstreams (A got ${onA} of 30)`);
    t.diagnostic(`30 new sessions through two instances: ${onA} on A, ${30 - onA} on B`);

    for (const [i, s] of sessions.entries()) {
        const other = i % 2 ? p1 : p2; // not the instance that initialized it
        const call = await request(other.url, { method: 'POST', headers: withSession(s.sid), body: callBody(100 + i) });
        assert.equal(call.status, 200, `tools/call of ${s.sid} through the other instance: ${call.text()}`);
        assert.equal(call.json().result.served_by, s.servedBy, 'tools/call reached the issuing upstream');
        const get = await request(other.url, { headers: withSession(s.sid, [['Accept', 'text/event-stream']]) });
        assert.equal(get.status, 200);
        assert.match(get.text(), new RegExp(`"served_by":"${s.servedBy}"`), 'GET reached the issuing upstream');
        const del = await request(other.url, { method: 'DELETE', headers: withSession(s.sid, []) });
        assert.equal(del.status, 200, 'DELETE reached the issuing upstream');
    }
    assert.equal(a.sessions.size + b.sessions.size, 0, 'every session was deleted on its own server');

    // the GET lines, written by the instance that never saw the session's _meta, carry it
    for (const [proxy, parity] of [[p2, 0], [p1, 1]]) {
        const lines = await proxy.waitForLogs(45, (l) => l.msg === 'mcp');
        for (const [i, s] of sessions.entries()) {
            if (i % 2 !== parity) continue;
            const get = lines.find((l) => l.http_method === 'GET' && l.mcp_session_id === s.sid);
            assert.ok(get, `GET line of ${s.sid}`);
            expectFields(get, { openai_session: s.conv, upstream: (s.servedBy === 'A' ? a : b).origin });
        }
    }
    // Redis forgot the deleted sessions
    await waitUntil(() => redisCli(redis, 'KEYS', 'mcpeek:s:*') === '',
        { describe: () => `session keys left in Redis: ${redisCli(redis, 'KEYS', 'mcpeek:s:*')}` });
});

test('one rate limit holds across both instances', { skip }, async (t) => {
    const { p1, p2 } = await fleet(t, { args: ['--rate-limit', 'openai_subject 5/s burst 5'] });
    const s = await init(p1, 1);
    await sleep(1100); // the initialize took a token: let the bucket fill again
    const started = performance.now();
    let allowed = 0;
    let refused = 0;
    // a burst of 30, then 40 more paced over about 1.6 s, alternating between the instances
    for (let i = 0; i < 70; i++) {
        if (i >= 30) await sleep(40);
        const res = await request((i % 2 ? p2 : p1).url, { method: 'POST', headers: withSession(s.sid), body: callBody(i, 'user-1') });
        if (res.status === 200) allowed += 1;
        else { assert.equal(res.status, 429, res.text()); refused += 1; assert.ok(Number(res.headers['retry-after']) >= 1); }
    }
    const seconds = (performance.now() - started) / 1000;
    // one fleet-wide bucket: burst 5 plus 5/s refill while the test ran (two local buckets
    // would let about twice that through)
    const ideal = 5 + 5 * seconds;
    assert.ok(allowed >= Math.floor(ideal) - 1 && allowed <= Math.ceil(ideal) + 1,
        `fleet-wide limit: ${allowed} of 70 allowed in ${seconds.toFixed(2)} s, expected about ${ideal.toFixed(1)}`);
    assert.equal(allowed + refused, 70);
    t.diagnostic(`fleet-wide 5/s burst 5: ${allowed} of 70 allowed in ${seconds.toFixed(2)} s over two instances ` +
        `(ideal ${ideal.toFixed(1)})`);
    const lines = [...await p1.waitForLogs(1, (l) => l.error === 'rate_limited'), ...await p2.waitForLogs(1, (l) => l.error === 'rate_limited')];
    assert.ok(lines.some((l) => l.rate_limit === 'openai_subject'));
});

test('a dead upstream: new sessions move to the live one, its sessions get 404 on both instances', { skip }, async (t) => {
    const { a, p1, p2 } = await fleet(t);
    const sessions = [];
    for (let i = 0; sessions.filter((s) => s.servedBy === 'A').length < 2 || sessions.length < 6; i++) {
        sessions.push(await init(i % 2 ? p2 : p1, i));
    }
    const onA = sessions.filter((s) => s.servedBy === 'A');
    await a.kill();
    for (const proxy of [p1, p2]) {
        // the first request meeting the dead upstream fails and marks it down on that instance
        const first = await request(proxy.url, { method: 'POST', headers: withSession(onA[0].sid), body: callBody(1) });
        assert.equal(first.status, 502);
        for (const s of onA) {
            const res = await request(proxy.url, { method: 'POST', headers: withSession(s.sid), body: callBody(2) });
            assert.equal(res.status, 404, `A's session ${s.sid}: ${res.text()}`);
            assert.equal(res.json().error.message, 'Session not found');
        }
        for (let i = 0; i < 10; i++) assert.equal((await init(proxy, 1000 + i, `after-${proxy.port}-${i}`)).servedBy, 'B');
    }
});

test('Redis gone or hung: no request fails and none waits longer than the deadline', { skip }, async (t) => {
    const { redis, p1, p2, admin1 } = await fleet(t, { args: ['--shared-state-timeout', '20ms', '--rate-limit', 'client_ip 1000/s'] });
    const s = await init(p1, 1);
    // p2 learns the session from Redis with its first request and keeps it in its local map;
    // during an outage that is what routes it (a session an instance has never seen can only
    // be hashed on its id: docs/scaling.md, failure behaviour)
    assert.equal((await request(p2.url, { method: 'POST', headers: withSession(s.sid), body: callBody(2) })).status, 200);

    // hung (SIGSTOP): every Redis lookup times out; requests still succeed, within the deadline
    redis.pause();
    const times = [];
    for (let i = 0; i < 10; i++) {
        const started = performance.now();
        const res = await request(p2.url, { method: 'POST', headers: withSession(s.sid), body: callBody(10 + i) });
        times.push(performance.now() - started);
        assert.equal(res.status, 200, `request ${i} with Redis hung: ${res.text()}`);
    }
    // two lookups at most (session, rate limit), 20 ms each, plus the exchange itself
    const worst = Math.max(...times);
    assert.ok(worst < 20 * 2 + 150, `slowest request with Redis hung took ${worst.toFixed(1)} ms`);
    redis.resume();

    // gone (killed): requests use local state at once
    await redis.kill();
    const gone = [];
    for (let i = 0; i < 20; i++) {
        const started = performance.now();
        const proxy = i % 2 ? p2 : p1;
        const res = i % 4 === 0
            ? await request(proxy.url, { method: 'POST', headers: POST_HEADERS, body: initBody(i, `x-${i}`) })
            : await request(proxy.url, { method: 'POST', headers: withSession(s.sid), body: callBody(40 + i) });
        gone.push(performance.now() - started);
        assert.equal(res.status, 200, `request ${i} with Redis gone: ${res.text()}`);
    }
    assert.ok(Math.max(...gone) < 150, `slowest request with Redis gone took ${Math.max(...gone).toFixed(1)} ms`);
    await waitUntil(async () => sampleValue((await scrape(admin1)).samples, 'mcpeek_shared_state_connections') === 0);
    const { samples } = await scrape(admin1);
    const errors = ['unavailable', 'timeout', 'disconnect'].map((kind) => sampleValue(samples, 'mcpeek_shared_state_errors_total', { kind }));
    assert.ok(errors.reduce((x, y) => x + y, 0) > 0, `shared_state errors counted: ${errors}`);
    // one stderr line about it per instance (rate-limited), however many requests
    const notes = p1.proc.stderrText().split('\n').filter((l) => l.includes('shared_state redis://'));
    assert.equal(notes.length, 1, `one stderr line about Redis:\n${p1.proc.stderrText()}`);
});

test('the MCP reference server twice behind two instances: a session works through either', { skip }, async (t) => {
    const e1 = await startEverything(t);
    const e2 = await startEverything(t);
    const redis = await startRedis(t);
    const args = ['--upstream', e2.url, '--shared-state', redis.url];
    const admin1 = await freePort();
    const admin2 = await freePort();
    const p1 = await startMcpeek(t, e1.url, { args, adminPort: admin1 });
    const p2 = await startMcpeek(t, e1.url, { args, adminPort: admin2 });
    for (const port of [admin1, admin2]) {
        await waitUntil(async () => sampleValue((await scrape(port)).samples, 'mcpeek_shared_state_connections') === 1);
    }
    const accept = ['Accept', 'application/json, text/event-stream'];
    const init = await request(p1.url, {
        method: 'POST', headers: [['Content-Type', 'application/json'], accept],
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: {
            protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'e2e', version: '1' },
            _meta: { 'openai/session': 'conv-ref' } } }),
    });
    assert.equal(init.status, 200, init.text());
    const sid = init.headers['mcp-session-id'];
    const h = [['Content-Type', 'application/json'], accept, ['Mcp-Session-Id', sid], ['MCP-Protocol-Version', '2025-06-18']];
    const note = await request(p2.url, { method: 'POST', headers: h, body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }) });
    assert.equal(note.status, 202, note.text());
    const list = await request(p2.url, { method: 'POST', headers: h, body: JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'tools/list' }) });
    assert.equal(list.status, 200, `tools/list through the other instance: ${list.text()}`);
    assert.match(list.text(), /"tools"/);
    const del = await request(p1.url, { method: 'DELETE', headers: h });
    assert.ok(del.status === 200 || del.status === 204, `DELETE: ${del.status}`);
    const lines = await p2.waitForLogs(2, (l) => l.msg === 'mcp');
    for (const l of lines.filter((x) => x.msg === 'mcp')) expectFields(l, { openai_session: 'conv-ref' });
    // both went to the server that issued the session
    const issuer = (await p1.waitForLogs(1, (l) => l.rpc_method === 'initialize')).find((l) => l.rpc_method === 'initialize').upstream;
    for (const l of lines.filter((x) => x.msg === 'mcp')) expectFields(l, { upstream: issuer });
});
