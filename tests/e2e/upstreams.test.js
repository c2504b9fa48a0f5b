// Several upstreams behind one mcpeek (docs/configuration.md `upstream`, `upstream_affinity`,
// `upstream_fail_timeout`; docs/scaling.md): new sessions spread by rendezvous hashing, a
// session's later POST, GET and DELETE reach the upstream that issued it, a dead upstream's
// sessions get 404 "Session not found" while new sessions move to the live one, /readyz and the
// per-upstream metrics follow. The upstreams are stateful scripted servers
// (lib/stateful-upstream.js) that answer 404 to a session they did not issue, so a request
// routed to the wrong one shows.

import assert from 'node:assert/strict';
import test from 'node:test';
import { DIRECT, expectFields, freePort, POST_HEADERS, request, startMcpeek } from './lib/harness.js';
import { sampleValue, scrape, waitUntil } from './lib/ops.js';
import { startStatefulUpstream } from './lib/stateful-upstream.js';

const skip = DIRECT ? 'routing is mcpeek\'s' : false;

const initBody = (id, openaiSession) => JSON.stringify({
    jsonrpc: '2.0', id, method: 'initialize',
    params: {
        protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'e2e', version: '1' },
        ...(openaiSession ? { _meta: { 'openai/session': openaiSession, 'openai/subject': `subj-${openaiSession}` } } : {}),
    },
});
const callBody = (id) => JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'probe', arguments: {} } });

async function initSession(proxy, i, openaiSession = `conv-${i}`) {
    const res = await request(proxy.url, { method: 'POST', headers: POST_HEADERS, body: initBody(i, openaiSession) });
    assert.equal(res.status, 200, `initialize ${i}: ${res.text()}`);
    const sid = res.headers['mcp-session-id'];
    assert.ok(sid, `initialize ${i} returned no Mcp-Session-Id`);
    return { sid, servedBy: res.json().result.served_by };
}

async function setup(t, { args = [], weights = [1, 1] } = {}) {
    const a = await startStatefulUpstream(t, 'A');
    const b = await startStatefulUpstream(t, 'B');
    const adminPort = await freePort();
    const w = (i) => (weights[i] === 1 ? '' : ` weight=${weights[i]}`);
    const proxy = await startMcpeek(t, `${a.url}${w(0)}`.trim(), {
        adminPort, args: ['--upstream', `${b.url}${w(1)}`, '--upstream-fail-timeout', '1s', ...args],
    });
    proxy.url = `${proxy.origin}/mcp`;
    return { a, b, proxy, adminPort };
}

test('sessions spread over both upstreams and every later request reaches the issuing one', { skip }, async (t) => {
    const { a, b, proxy, adminPort } = await setup(t);
    const sessions = [];
    for (let i = 0; i < 40; i++) sessions.push(await initSession(proxy, i));
    const onA = sessions.filter((s) => s.servedBy === 'A').length;
    assert.ok(onA >= 8 && onA <= 32, `40 sessions should spread over both upstreams, A got ${onA}`);
    for (const s of sessions) assert.equal(s.sid.split('-')[0], s.servedBy, 'the id comes from the server that answered');

    for (const [i, s] of sessions.entries()) {
        const headers = [...POST_HEADERS, ['Mcp-Session-Id', s.sid]];
        const call = await request(proxy.url, { method: 'POST', headers, body: callBody(100 + i) });
        assert.equal(call.status, 200, `tools/call of ${s.sid}: ${call.text()}`);
        assert.equal(call.json().result.served_by, s.servedBy, `tools/call of ${s.sid} went to the wrong upstream`);
        const get = await request(proxy.url, { headers: [['Accept', 'text/event-stream'], ['Mcp-Session-Id', s.sid]] });
        assert.equal(get.status, 200, `GET of ${s.sid}: ${get.text()}`);
        assert.match(get.text(), new RegExp(`"served_by":"${s.servedBy}"`));
        const del = await request(proxy.url, { method: 'DELETE', headers: [['Mcp-Session-Id', s.sid]] });
        assert.equal(del.status, 200, `DELETE of ${s.sid}`);
    }
    assert.equal(a.sessions.size + b.sessions.size, 0, 'every DELETE reached the server holding the session');

    // one line per exchange, each naming the upstream it went to; GET lines keep the POST's context
    const lines = await proxy.waitForLogs(160, (l) => l.msg === 'mcp');
    const origin = { A: a.origin, B: b.origin };
    for (const s of sessions) {
        const mine = lines.filter((l) => l.msg === 'mcp' && l.mcp_session_id === s.sid);
        assert.equal(mine.length, 4, `4 lines for ${s.sid}`);
        for (const l of mine) expectFields(l, { upstream: origin[s.servedBy], status: 200 });
        const get = mine.find((l) => l.http_method === 'GET');
        assert.equal(get.openai_session, mine[0].openai_session, 'the GET line carries the POST\'s openai_session');
    }

    const { samples } = await scrape(adminPort);
    const reqsA = sampleValue(samples, 'mcpeek_upstream_requests_total', { upstream: a.origin });
    const reqsB = sampleValue(samples, 'mcpeek_upstream_requests_total', { upstream: b.origin });
    assert.equal(reqsA + reqsB, 160, `per-upstream request counters add up (${reqsA} + ${reqsB})`);
    assert.equal(reqsA, a.requests.length);
    assert.equal(sampleValue(samples, 'mcpeek_upstream_up', { upstream: a.origin }), 1);
});

test('the same openai/session always lands on the same upstream; weights shift the share', { skip }, async (t) => {
    const { proxy } = await setup(t, { weights: [3, 1] });
    const first = await initSession(proxy, 1, 'conv-stable');
    for (let i = 0; i < 5; i++) {
        const again = await initSession(proxy, 2 + i, 'conv-stable');
        assert.equal(again.servedBy, first.servedBy, 'rendezvous hashing is stable per openai/session');
    }
    let onA = 0;
    for (let i = 0; i < 200; i++) onA += (await initSession(proxy, 100 + i, `w-${i}`)).servedBy === 'A';
    // weight 3:1 is 75%; binomial sd over 200 is ~3%
    assert.ok(onA >= 125 && onA <= 175, `weight=3 upstream should get about 150 of 200 new sessions, got ${onA}`);
});

test('a dead upstream: its sessions get 404 Session not found, new sessions go to the live one', { skip }, async (t) => {
    const { a, b, proxy, adminPort } = await setup(t);
    const sessions = [];
    for (let i = 0; sessions.filter((s) => s.servedBy === 'A').length < 3 || sessions.length < 10; i++) {
        sessions.push(await initSession(proxy, i));
    }
    const onA = sessions.filter((s) => s.servedBy === 'A');
    const onB = sessions.filter((s) => s.servedBy === 'B');
    await a.kill();

    // the first request that meets the dead upstream fails (502) and marks it down
    const first = await request(proxy.url, { method: 'POST', headers: [...POST_HEADERS, ['Mcp-Session-Id', onA[0].sid]], body: callBody(1) });
    assert.equal(first.status, 502);
    // from then on its sessions are answered 404 without trying it
    for (const s of onA) {
        const res = await request(proxy.url, { method: 'POST', headers: [...POST_HEADERS, ['Mcp-Session-Id', s.sid]], body: callBody(2) });
        assert.equal(res.status, 404, `session ${s.sid} of the dead upstream: ${res.status} ${res.text()}`);
        assert.deepEqual(res.json().error, { code: -32001, message: 'Session not found' });
        const get = await request(proxy.url, { headers: [['Accept', 'text/event-stream'], ['Mcp-Session-Id', s.sid]] });
        assert.equal(get.status, 404);
    }
    // B's sessions are untouched, new sessions all land on B
    for (const s of onB) {
        const res = await request(proxy.url, { method: 'POST', headers: [...POST_HEADERS, ['Mcp-Session-Id', s.sid]], body: callBody(3) });
        assert.equal(res.json().result.served_by, 'B');
    }
    for (let i = 0; i < 20; i++) assert.equal((await initSession(proxy, 500 + i, `new-${i}`)).servedBy, 'B');

    const lines = await proxy.waitForLogs(1, (l) => l.error === 'session_upstream_down');
    const lost = lines.filter((l) => l.error === 'session_upstream_down');
    expectFields(lost[0], { status: 404, upstream: a.origin, rpc_error_code: -32001 });
    expectFields(lines.find((l) => l.mcp_session_id === onA[0].sid && l.status === 502), { error: 'upstream_connect', upstream: a.origin });

    const ready = await request(`http://127.0.0.1:${adminPort}/readyz`);
    assert.equal(ready.status, 200, 'ready while one upstream is up');
    const { samples } = await scrape(adminPort);
    assert.equal(sampleValue(samples, 'mcpeek_upstream_up', { upstream: a.origin }), 0);
    assert.equal(sampleValue(samples, 'mcpeek_upstream_up', { upstream: b.origin }), 1);
    assert.ok(sampleValue(samples, 'mcpeek_upstream_failures_total', { upstream: a.origin }) >= 1);
    assert.equal(sampleValue(samples, 'mcpeek_upstream_sessions_lost_total', { upstream: a.origin }), onA.length * 2);

    // after upstream_fail_timeout (1s) A is tried again: still dead, so marked again (502 once)
    await new Promise((r) => setTimeout(r, 1100));
    const retry = await request(proxy.url, { method: 'POST', headers: [...POST_HEADERS, ['Mcp-Session-Id', onA[0].sid]], body: callBody(4) });
    assert.equal(retry.status, 502, 'after the fail timeout the upstream is tried again');
    await b.kill();
    await request(proxy.url, { method: 'POST', headers: [...POST_HEADERS, ['Mcp-Session-Id', onB[0].sid]], body: callBody(5) });
    await waitUntil(async () => (await request(`http://127.0.0.1:${adminPort}/readyz`)).status === 503,
        { describe: () => '/readyz should answer 503 when every upstream is down' });
});

test('upstream_affinity off: a down upstream\'s session moves to the other instead of 404', { skip }, async (t) => {
    const { a, proxy } = await setup(t, { args: ['--upstream-affinity', 'off'] });
    let s;
    for (let i = 0; !s; i++) {
        const got = await initSession(proxy, i);
        if (got.servedBy === 'A') s = got;
    }
    // without affinity a session's requests are hashed on their session id, wherever that
    // lands; once A is down and marked (by the first request that meets it, if any) they go to B
    await a.kill();
    await request(proxy.url, { method: 'POST', headers: [...POST_HEADERS, ['Mcp-Session-Id', s.sid]], body: callBody(2) });
    const after = await request(proxy.url, { method: 'POST', headers: [...POST_HEADERS, ['Mcp-Session-Id', s.sid]], body: callBody(3) });
    // B never issued it: B's own 404 (an MCP server's), not mcpeek's
    assert.equal(after.status, 404);
    assert.match(after.json().error.message, /on B/);
    const lines = await proxy.waitForLogs(1, (l) => l.mcp_session_id === s.sid && l.status === 404);
    assert.ok(!lines.some((l) => l.error === 'session_upstream_down'), 'no affinity: no session is declared lost');
});
