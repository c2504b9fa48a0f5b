// Hostile clients and failing upstreams against the real mcpeek binary: size and connection
// limits, slowloris, upstream refusal / timeout / resets, client hang-ups, non-JSON-RPC
// answers, strict_json, pathological JSON, Origin and bearer checks, and what the access log
// may contain about people. Every test checks what the client got, the exchange's log line,
// and that mcpeek still answers a normal request afterwards (plus no descriptor growth where
// connections break). All mcpeek-only: skipped with MCPEEK_E2E_DIRECT=1.

import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import test from 'node:test';
import {
    DIRECT, expectFields, fmtLines, freePort, openStream, POST_HEADERS, request, RSS_LIMIT_MB, sleep,
    startMcpeek, TIME_SCALE,
} from './lib/harness.js';
import {
    assertFdsSettle, assertServes, fdBaseline, fdCount, hostileUpstream, listenOn, rawConnect, rawPost,
    RSS_CHECKS, rpc, rssMiB, startMcpeekFromConfig, trickle,
} from './lib/hostile.js';
import { sampleValue, scrape } from './lib/ops.js';

const only = DIRECT ? { skip: 'mcpeek-only behaviour (MCPEEK_E2E_DIRECT=1)' } : {};
const MiB = 1024 * 1024;

async function setup(t, handler, args = [], opts = {}) {
    const up = await hostileUpstream(t, handler);
    const proxy = await startMcpeek(t, up.url, { args, ...opts });
    return { up, proxy };
}

function tmpDir(t) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mcpeek-hostile-'));
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
    return dir;
}

// The answer is mcpeek's own JSON-RPC error: status, JSON body, id, numeric code, message.
function assertRpcError(res, status, { id = null, code, ids } = {}) {
    const text = res.text();
    assert.equal(res.status, status, `expected ${status}, got ${res.status}: ${text}`);
    assert.match(res.headers['content-type'] || '', /^application\/json/, `content-type of ${status}`);
    let b;
    assert.doesNotThrow(() => { b = JSON.parse(text); }, `${status} body is JSON: ${text}`);
    assert.equal(b.jsonrpc, '2.0', `${status} body: ${text}`);
    if (ids) assert.ok(ids.some((x) => JSON.stringify(x) === JSON.stringify(b.id)), `${status} id ${JSON.stringify(b.id)} not in ${JSON.stringify(ids)}`);
    else assert.deepEqual(b.id, id, `${status} id: ${text}`);
    assert.equal(typeof b.error?.code, 'number', `${status} error.code: ${text}`);
    assert.equal(typeof b.error?.message, 'string', `${status} error.message: ${text}`);
    if (code !== undefined) assert.equal(b.error.code, code, `${status} error.code: ${text}`);
    return b;
}

// The one log line matching pred (waits for it; fails if there are several).
async function lineWhere(proxy, pred, what) {
    await proxy.waitForLogs(1, pred);
    const found = proxy.logs().filter(pred);
    assert.equal(found.length, 1, `${what}: expected one matching log line, got ${found.length}:\n${fmtLines(proxy.logs())}`);
    return found[0];
}

// The log file is valid UTF-8, and every line is one JSON object.
function assertLogFileClean(proxy) {
    const raw = fs.readFileSync(proxy.logFile);
    assert.doesNotThrow(() => new TextDecoder('utf-8', { fatal: true }).decode(raw), 'log file is valid UTF-8');
    const lines = raw.toString('utf8').split('\n');
    assert.equal(lines.pop(), '', 'log file ends with a newline');
    for (const l of lines) {
        const o = JSON.parse(l);
        assert.equal(typeof o, 'object');
        assert.equal(o.msg, 'mcp');
    }
    return raw.toString('utf8');
}

function assertRss(t, proxy, what) {
    if (!RSS_CHECKS) return;
    const mib = rssMiB(proxy);
    t.diagnostic(`${what}: mcpeek VmHWM ${mib.toFixed(1)} MiB`);
    assert.ok(mib < RSS_LIMIT_MB, `${what}: mcpeek peak RSS ${mib.toFixed(1)} MiB >= ${RSS_LIMIT_MB} MiB`);
}

const sseEvent = (n) => `event: message\ndata: {"jsonrpc":"2.0","method":"notifications/message","params":{"n":${n}}}\n\n`;

// ---- limits --------------------------------------------------------------------------------

test('body_over_max_body_size_gets_413_body_too_large_and_never_reaches_the_upstream', only, async (t) => {
    const { up, proxy } = await setup(t, undefined, ['--max-body-size', '1k']);
    const big = rpc('big', 'tools/call', { name: 'echo', arguments: { message: 'x'.repeat(2000) } });
    const res = await request(proxy.url, { method: 'POST', headers: POST_HEADERS, body: big });
    assertRpcError(res, 413, { ids: [null, 'big'] });
    // A declared 100 MiB that never comes: refused on the head alone, at once.
    const c = await rawConnect(proxy.port);
    c.sock.write(rawPost(proxy.port, '', { contentLength: 100 * MiB }));
    const r2 = await c.response(2000);
    assertRpcError(r2, 413);
    c.sock.destroy();
    assert.equal(up.hits().length, 0, 'an oversized body reached the upstream');
    const lines = await proxy.waitForLogs(2, (l) => l.status === 413);
    for (const l of lines.filter((x) => x.status === 413)) {
        expectFields(l, { error: 'body_too_large', level: 'warn', http_method: 'POST', path: '/mcp' });
    }
    await assertServes(proxy);
    await proxy.expectLogCount(3);
});

test('headers_over_max_header_size_get_431_headers_too_large', only, async (t) => {
    const { up, proxy } = await setup(t, undefined, ['--max-header-size', '1k']);
    const res = await request(proxy.url, {
        method: 'POST', headers: [...POST_HEADERS, ['X-Padding', 'a'.repeat(2000)]], body: rpc('hdr'),
    });
    assertRpcError(res, 431);
    // Many small headers add up the same way.
    const many = Array.from({ length: 80 }, (_, i) => [`X-H${i}`, 'v'.repeat(20)]);
    const res2 = await request(proxy.url, { method: 'POST', headers: [...POST_HEADERS, ...many], body: rpc('hdr2') });
    assertRpcError(res2, 431);
    assert.equal(up.hits().length, 0);
    const lines = (await proxy.waitForLogs(2, (l) => l.status === 431)).filter((l) => l.status === 431);
    for (const l of lines) expectFields(l, { error: 'headers_too_large', http_method: 'POST', path: '/mcp' });
    await assertServes(proxy);
    await proxy.expectLogCount(3);
});

test('third_concurrent_connection_over_max_connections_gets_503_while_the_first_two_work', only, async (t) => {
    const { proxy } = await setup(t, undefined, ['--max-connections', '2']);
    // The harness's readiness probe connection counts until mcpeek has seen it close.
    await assertServes(proxy, 'warm-up');
    await sleep(200 * TIME_SCALE);
    const a = await rawConnect(proxy.port);
    const b = await rawConnect(proxy.port);
    await sleep(200 * TIME_SCALE); // let mcpeek accept both
    const third = await request(proxy.url, { method: 'POST', headers: POST_HEADERS, body: rpc('third') });
    assertRpcError(third, 503, { ids: [null, 'third'] });
    for (const [c, id] of [[a, 'via-a'], [b, 'via-b']]) {
        c.sock.write(rawPost(proxy.port, rpc(id, 'ping', {})));
        const r = await c.response();
        assert.equal(r.status, 200, `${id}: ${r.status} ${r.text()}`);
        assert.equal(r.json().id, id);
    }
    const l503 = await lineWhere(proxy, (l) => l.status === 503, '503');
    expectFields(l503, { error: 'too_many_connections', level: 'warn' });
    // Closing every connection gives the slots back: two new concurrent connections both work.
    a.sock.destroy();
    b.sock.destroy();
    await sleep(300 * TIME_SCALE);
    const c = await rawConnect(proxy.port);
    const d = await rawConnect(proxy.port);
    t.after(() => { c.sock.destroy(); d.sock.destroy(); });
    c.sock.write(rawPost(proxy.port, rpc('via-c', 'ping', {})));
    d.sock.write(rawPost(proxy.port, rpc('via-d', 'ping', {})));
    assert.equal((await c.response()).status, 200, 'slot of a closed connection not given back');
    assert.equal((await d.response()).status, 200, 'slot of the refused connection not given back');
    c.sock.destroy();
    d.sock.destroy();
    await sleep(300 * TIME_SCALE);
    await assertServes(proxy);
    await proxy.expectLogCount(7);
});

test('conflicting_duplicate_content_length_headers_get_400_and_never_reach_the_upstream', only, async (t) => {
    // Two different Content-Lengths (2000, over the limit, then the real 40): parsers that take
    // the first and parsers that take the last would frame the body differently (request
    // smuggling), so the request is refused whatever either value says.
    const { up, proxy } = await setup(t, undefined, ['--max-body-size', '1k', '--client-header-timeout', '1s']);
    const body = rpc('dup-cl', 'ping', {});
    const conns = [];
    for (let i = 0; i < 5; i++) {
        const c = await rawConnect(proxy.port);
        t.after(() => c.sock.destroy());
        c.sock.write(Buffer.concat([Buffer.from(`POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n` +
            `Content-Length: 2000\r\nContent-Length: ${body.length}\r\n\r\n`), Buffer.from(body)]));
        conns.push(c);
    }
    for (const c of conns) {
        const r = await c.response();
        assert.equal(r.status, 400, `answer to conflicting Content-Length: ${r.status} ${r.text()}`);
        assert.equal(r.json().error.code, -32600, r.text());
        c.sock.destroy();
    }
    const lines = await proxy.expectLogCount(5);
    for (const l of lines) expectFields(l, { status: 400, error: 'bad_request', http_method: 'POST', path: '/mcp' });
    assert.equal(up.hits().length, 0, 'a request with conflicting Content-Length headers was forwarded');
    await assertServes(proxy);
});

test('unproxied_methods_and_malformed_request_lines_get_a_jsonrpc_error_and_a_log_line', only, async (t) => {
    // Each refusal is a JSON-RPC error with a log line (never an HTML page, never a silent close).
    const { up, proxy } = await setup(t);
    const cases = [['TRACE /mcp HTTP/1.1', 405, 'method_not_allowed'], ['FOO /mcp HTTP/1.1', 405, 'method_not_allowed'],
        ['GET /mcp', 400, 'bad_request'], ['GET /mcp HTTP/2.0', 400, 'bad_request']];
    for (const [i, [line, status, error]] of cases.entries()) {
        const c = await rawConnect(proxy.port);
        t.after(() => c.sock.destroy());
        c.sock.write(`${line}\r\nHost: 127.0.0.1\r\n\r\n`);
        const r = await c.response();
        assert.equal(r.status, status, `${line}: ${r.status} ${r.text()}`);
        assert.equal(r.json().error.code, -32600, `${line}: ${r.text()}`);
        const l = (await proxy.expectLogCount(i + 1))[i];
        expectFields(l, { status, error, http_method: line.split(' ')[0], path: '/mcp', level: 'warn', response: 'json' });
        c.sock.destroy();
    }
    assert.equal(up.hits().length, 0, 'a refused request reached the upstream');
    await assertServes(proxy);
});

test('chunked_upload_over_max_body_size_is_refused_and_never_reaches_the_upstream', only, async (t) => {
    const { up, proxy } = await setup(t, undefined, ['--max-body-size', '1k']);
    const body = rpc('chunked-big', 'tools/call', { name: 'echo', arguments: { message: 'c'.repeat(3000) } });
    const c = await rawConnect(proxy.port);
    t.after(() => c.sock.destroy());
    const chunks = body.match(/[^]{1,500}/g).map((x) => `${Buffer.byteLength(x).toString(16)}\r\n${x}\r\n`).join('');
    c.sock.write(`POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n` +
        `Transfer-Encoding: chunked\r\n\r\n${chunks}0\r\n\r\n`);
    const t0 = performance.now();
    while (!c.isClosed() && !/\r\n\r\n/.test(c.got().toString('latin1')) && performance.now() - t0 < 2000 * TIME_SCALE) await sleep(20);
    const got = c.got().toString('latin1');
    t.diagnostic(`chunked 3 KiB upload over a 1 KiB limit: ${JSON.stringify(got.split('\r\n')[0])}, closed ${c.isClosed()}, ` +
        `log lines ${JSON.stringify(proxy.logs().map((l) => [l.status, l.error]))}`);
    assert.match(got, /^HTTP\/1\.1 413 /, `the client got no 413 for an oversized chunked upload (closed: ${c.isClosed()})`);
    c.sock.destroy();
    assert.equal(up.hits().length, 0, 'an oversized chunked body reached the upstream');
    await assertServes(proxy);
});

test('http10_and_pipelined_requests_are_each_answered_and_logged', only, async (t) => {
    // HTTP/1.0 without keep-alive: the answer is delimited by Content-Length, or by the close
    // when the upstream streamed it (no Content-Length, so no chunked framing for 1.0).
    const { proxy } = await setup(t, (req, res, body) => {
        const out = JSON.stringify({ jsonrpc: '2.0', id: JSON.parse(body).id, result: {} });
        if (JSON.parse(body).id === 'h10-cl') res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': out.length });
        else res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end(out);
    });
    for (const id of ['h10-cl', 'h10-stream']) {
        const c = await rawConnect(proxy.port);
        t.after(() => c.sock.destroy());
        const b = rpc(id, 'tools/list', {});
        c.sock.write(`POST /mcp HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: ${b.length}\r\n\r\n${b}`);
        await Promise.race([c.closed, sleep(2000 * TIME_SCALE)]);
        const got = c.got().toString('latin1');
        t.diagnostic(`${id}: closed ${c.isClosed()}, got ${JSON.stringify(got.replace(/Date: [^\r]*\r\n/, ''))}`);
        assert.match(got, /^HTTP\/1\.[01] 200 /, `${id}: HTTP/1.0 request got no answer (closed: ${c.isClosed()})`);
        assert.ok(got.endsWith(`"id":"${id}","result":{}}`), `${id}: answer body incomplete: ${JSON.stringify(got)}`);
        if (id === 'h10-stream') assert.ok(c.isClosed(), `${id}: answer without Content-Length to HTTP/1.0 must end with a close`);
        c.sock.destroy();
    }
    const p = await rawConnect(proxy.port);
    t.after(() => p.sock.destroy());
    p.sock.write(Buffer.concat(['pipe-1', 'pipe-2', 'pipe-3'].map((id) => rawPost(proxy.port, rpc(id, 'ping', {})))));
    const deadline = Date.now() + 3000 * TIME_SCALE;
    while ((p.got().toString('latin1').match(/HTTP\/1\.1 200/g) || []).length < 3 && Date.now() < deadline) await sleep(20);
    const ids = [...p.got().toString('latin1').matchAll(/"id":"(pipe-\d)"/g)].map((m) => m[1]);
    assert.deepEqual(ids, ['pipe-1', 'pipe-2', 'pipe-3'], `pipelined answers: ${p.got().toString('latin1')}`);
    p.sock.destroy();
    const lines = await proxy.waitForLogs(5);
    assert.deepEqual(lines.map((l) => l.rpc_id), ['h10-cl', 'h10-stream', 'pipe-1', 'pipe-2', 'pipe-3']);
    await assertServes(proxy);
    await proxy.expectLogCount(6);
});

// ---- slow clients -----------------------------------------------------------------------------

test('slowloris_headers_trickled_past_client_header_timeout_get_408_client_timeout', only, async (t) => {
    const { up, proxy } = await setup(t, undefined, ['--client-header-timeout', '1s']);
    const base = await fdBaseline(proxy);
    const c = await rawConnect(proxy.port);
    t.after(() => c.sock.destroy());
    const head = rawPost(proxy.port, rpc('slow-head'), { extra: Array.from({ length: 10 }, (_, i) => `X-Pad-${i}: ${'p'.repeat(20)}`) });
    const t0 = performance.now();
    const sent = await trickle(c, head, 200);
    while (!c.isClosed() && c.got().length === 0 && performance.now() - t0 < 5000 * TIME_SCALE) await sleep(20);
    const ms = performance.now() - t0;
    t.diagnostic(`answered/cut after ${Math.round(ms)} ms, ${sent} of ${head.length} header bytes sent; ` +
        `got ${JSON.stringify(c.got().toString('latin1').slice(0, 40))}, closed ${c.isClosed()}`);
    assert.ok(c.isClosed() || c.got().length > 0, 'the trickling client was neither answered nor cut');
    assert.ok(ms < 2000 * TIME_SCALE, `slowloris held the connection ${Math.round(ms)} ms (timeout 1 s)`);
    const answered = c.got().length > 0;
    if (answered) assertRpcError(await c.response(), 408);
    c.sock.destroy();
    const l = await lineWhere(proxy, (x) => x.error === 'client_timeout', 'client_timeout');
    // logging.md: status is what was sent, "408, or 0 when the connection was just closed".
    assert.equal(l.status, answered ? 408 : 0,
        `the client ${answered ? 'got a 408' : 'got no answer (connection closed)'}, the log says status ${l.status}`);
    assert.equal(up.hits().length, 0);
    await assertServes(proxy);
    await assertFdsSettle(proxy, base, 'after slowloris');
    await proxy.expectLogCount(3);
});

test('body_trickled_past_client_body_timeout_gets_408_client_timeout', only, async (t) => {
    const { up, proxy } = await setup(t, undefined, ['--client-body-timeout', '1s']);
    const base = await fdBaseline(proxy);
    const c = await rawConnect(proxy.port);
    t.after(() => c.sock.destroy());
    const body = Buffer.from(rpc('slow-body', 'tools/call', { name: 'x', arguments: { pad: 'b'.repeat(100) } }));
    c.sock.write(rawPost(proxy.port, '', { contentLength: body.length }));
    const t0 = performance.now();
    const sent = await trickle(c, body, 200);
    while (!c.isClosed() && c.got().length === 0 && performance.now() - t0 < 5000 * TIME_SCALE) await sleep(20);
    const ms = performance.now() - t0;
    t.diagnostic(`answered/cut after ${Math.round(ms)} ms, ${sent} of ${body.length} body bytes sent; closed ${c.isClosed()}`);
    assert.ok(c.isClosed() || c.got().length > 0, 'the trickling client was neither answered nor cut');
    assert.ok(ms < 2000 * TIME_SCALE, `trickled body held the connection ${Math.round(ms)} ms (timeout 1 s)`);
    const answered = c.got().length > 0;
    if (answered) assertRpcError(await c.response(), 408);
    c.sock.destroy();
    const l = await lineWhere(proxy, (x) => x.error === 'client_timeout', 'client_timeout');
    assert.equal(l.status, answered ? 408 : 0,
        `the client ${answered ? 'got a 408' : 'got no answer (connection closed)'}, the log says status ${l.status}`);
    assert.equal(up.hits().length, 0, 'a partial body reached the upstream');
    await assertServes(proxy);
    await assertFdsSettle(proxy, base, 'after trickled body');
    await proxy.expectLogCount(3);
});

// ---- every exchange that started leaves one line, naming whose it was ---------------------------

test('client_hanging_up_mid_upload_leaves_one_client_aborted_line_with_bytes_in_as_received', only, async (t) => {
    const { up, proxy } = await setup(t);
    const c = await rawConnect(proxy.port);
    // Declares 1 MiB, sends 100 KiB of it, then closes.
    c.sock.write(rawPost(proxy.port, Buffer.alloc(100 * 1024, 'a'), {
        contentLength: MiB, extra: ['Mcp-Session-Id: sess-upload', 'MCP-Protocol-Version: 2025-06-18'],
    }));
    await sleep(200);
    c.sock.end();
    await c.closed;
    const lines = await proxy.expectLogCount(1);
    expectFields(lines[0], {
        error: 'client_aborted', status: 0, bytes_in: 100 * 1024, bytes_out: 0, http_method: 'POST', path: '/mcp',
        mcp_session_id: 'sess-upload', mcp_protocol_version: '2025-06-18', rpc_error_code: undefined, response: undefined,
    });
    assert.equal(up.hits().length, 0);
    await assertServes(proxy);
});

test('refusals_after_the_head_carry_session_protocol_version_and_openai_context', only, async (t) => {
    const dir = tmpDir(t);
    fs.writeFileSync(path.join(dir, 'tokens'), 'tok\n');
    const { proxy } = await setup(t, undefined, ['--max-body-size', '1k', '--client-body-timeout', '1s',
        '--auth-tokens-file', path.join(dir, 'tokens')]);
    const auth = ['Authorization', 'Bearer tok'];
    const body = rpc('ctx', 'tools/call', { name: 'probe', arguments: {}, _meta: { 'openai/session': 'v1/conv-42', 'openai/subject': 'v1/user-7' } });
    const first = await request(proxy.url, { method: 'POST', headers: [...POST_HEADERS, auth, ['Mcp-Session-Id', 'sess-ctx']], body });
    assert.equal(first.status, 200, first.text());
    const who = ['Mcp-Session-Id: sess-ctx', 'MCP-Protocol-Version: 2025-06-18'];
    // 413 on the declared length
    const c1 = await rawConnect(proxy.port);
    c1.sock.write(rawPost(proxy.port, '', { contentLength: 100 * MiB, extra: ['Authorization: Bearer tok', ...who] }));
    assertRpcError(await c1.response(), 413);
    c1.sock.destroy();
    // 408 on a body that stops coming
    const c2 = await rawConnect(proxy.port);
    c2.sock.write(rawPost(proxy.port, '{"jsonrpc":', { contentLength: 500, extra: ['Authorization: Bearer tok', ...who] }));
    assertRpcError(await c2.response(3000), 408);
    c2.sock.destroy();
    // 401 on the head
    const c3 = await rawConnect(proxy.port);
    c3.sock.write(rawPost(proxy.port, '{}', { extra: who }));
    assertRpcError(await c3.response(), 401);
    c3.sock.destroy();
    const lines = await proxy.expectLogCount(4);
    const want = { mcp_session_id: 'sess-ctx', mcp_protocol_version: '2025-06-18', openai_session: 'v1/conv-42', openai_subject: 'v1/user-7', openai_from: 'session_map' };
    expectFields(lines[1], { status: 413, error: 'body_too_large', ...want }, '413 line');
    expectFields(lines[2], { status: 408, error: 'client_timeout', bytes_in: 11, ...want }, '408 line');
    expectFields(lines[3], { status: 401, error: 'unauthorized', ...want }, '401 line');
});

// ---- failing upstreams ------------------------------------------------------------------------

test('upstream_refusing_connections_gets_502_upstream_connect_with_the_request_id', only, async (t) => {
    const deadPort = await freePort();
    const proxy = await startMcpeek(t, `http://127.0.0.1:${deadPort}/mcp`);
    await sleep(100);
    const base = fdCount(proxy.pid);
    for (const id of ['dead-1', 2, 'dead-3']) {
        const res = await request(proxy.url, { method: 'POST', headers: POST_HEADERS, body: rpc(id) });
        assertRpcError(res, 502, { id, code: -32000 });
    }
    const lines = await proxy.waitForLogs(3);
    for (const [i, id] of ['dead-1', 2, 'dead-3'].entries()) {
        expectFields(lines[i], { status: 502, error: 'upstream_connect', rpc_id: id, level: 'warn', rpc_error_code: -32000 });
        assert.equal(lines[i].upstream_ms, undefined, 'upstream_ms for a refused connect');
    }
    await assertFdsSettle(proxy, base, 'after refused connects');
    // The upstream comes back on that port: the next request works.
    await listenOn(t, deadPort, (req, res, body) => {
        const out = JSON.stringify({ jsonrpc: '2.0', id: JSON.parse(body).id, result: {} });
        res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(out) });
        res.end(out);
    });
    await assertServes(proxy);
    await proxy.expectLogCount(4);
});

test('upstream_slower_than_upstream_response_timeout_gets_504_upstream_timeout', only, async (t) => {
    let upstreamClosed = null;
    const timers = [];
    t.after(() => timers.forEach(clearTimeout));
    const { proxy } = await setup(t, (req, res, body) => {
        res.on('close', () => { upstreamClosed = performance.now(); });
        timers.push(setTimeout(() => { if (!res.destroyed) res.end(); }, 5000));
    }, ['--upstream-response-timeout', '1s']);
    const base = await fdBaseline(proxy);
    const t0 = performance.now();
    const res = await request(proxy.url, { method: 'POST', headers: POST_HEADERS, body: rpc('slow-tool') });
    const ms = performance.now() - t0;
    assertRpcError(res, 504, { id: 'slow-tool', code: -32000 });
    assert.ok(ms >= 900 && ms < 2000 * TIME_SCALE, `504 after ${Math.round(ms)} ms (timeout 1 s)`);
    const l = await lineWhere(proxy, (x) => x.rpc_id === 'slow-tool', '504');
    expectFields(l, { status: 504, error: 'upstream_timeout', level: 'warn' });
    assert.equal(l.upstream_ms, undefined);
    const waitUntil = performance.now() + 1000 * TIME_SCALE;
    while (upstreamClosed === null && performance.now() < waitUntil) await sleep(20);
    assert.ok(upstreamClosed !== null, 'the timed-out upstream request was left open');
    await assertServes(proxy);
    await assertFdsSettle(proxy, base, 'after upstream timeout');
    await proxy.expectLogCount(3);
});

test('upstream_reset_mid_sse_ends_the_client_stream_and_logs_upstream_reset', only, async (t) => {
    const { proxy } = await setup(t, (req, res) => {
        res.writeHead(200, { 'Content-Type': 'text/event-stream' });
        res.write(sseEvent(1));
        setTimeout(() => req.socket.destroy(), 150);
    });
    const base = await fdBaseline(proxy);
    const { res } = await openStream(proxy.url, { headers: POST_HEADERS, body: rpc('sse-reset') });
    assert.equal(res.statusCode, 200);
    let text = '';
    res.on('data', (d) => { text += d; });
    res.on('error', () => {});
    const closed = new Promise((resolve) => res.on('close', () => resolve('closed')));
    assert.equal(await Promise.race([closed, sleep(3000 * TIME_SCALE).then(() => 'timeout')]), 'closed',
        'the client stream did not end after the upstream reset');
    assert.equal(text, sseEvent(1), 'the event sent before the reset arrived');
    const l = await lineWhere(proxy, (x) => x.rpc_id === 'sse-reset', 'sse reset');
    expectFields(l, { status: 200, response: 'sse', sse_events: 1, error: 'upstream_reset', level: 'warn' });
    await assertServes(proxy);
    await assertFdsSettle(proxy, base, 'after upstream reset mid-SSE');
    await proxy.expectLogCount(3);
});

test('upstream_dying_mid_json_gives_the_client_a_truncated_response_and_logs_upstream_reset', only, async (t) => {
    const partial = `{"jsonrpc":"2.0","id":"json-cut","result":{"text":"${'z'.repeat(300)}`;
    const { proxy } = await setup(t, (req, res) => {
        res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': '1000' });
        res.write(partial);
        setTimeout(() => req.socket.destroy(), 150);
    });
    const base = await fdBaseline(proxy);
    const { res } = await openStream(proxy.url, { headers: POST_HEADERS, body: rpc('json-cut') });
    assert.equal(res.statusCode, 200);
    let bytes = 0;
    let aborted = false;
    res.on('data', (d) => { bytes += d.length; });
    res.on('aborted', () => { aborted = true; });
    res.on('error', () => { aborted = true; });
    const closed = new Promise((resolve) => res.on('close', () => resolve('closed')));
    assert.equal(await Promise.race([closed, sleep(3000 * TIME_SCALE).then(() => 'timeout')]), 'closed',
        'the client response did not end after the upstream died');
    t.diagnostic(`client got ${bytes} bytes, complete=${res.complete}, aborted=${aborted}`);
    assert.equal(res.complete, false, 'the truncated JSON answer looked complete to the client');
    assert.ok(bytes < 1000, `client got ${bytes} bytes of a 1000-byte promise`);
    const l = await lineWhere(proxy, (x) => x.rpc_id === 'json-cut', 'json cut');
    expectFields(l, { status: 200, error: 'upstream_reset', level: 'warn' });
    await assertServes(proxy);
    await assertFdsSettle(proxy, base, 'after upstream death mid-JSON');
    await proxy.expectLogCount(3);
});

// ---- clients hanging up -----------------------------------------------------------------------

test('client_disconnect_mid_sse_closes_the_upstream_request_and_logs_client_aborted', only, async (t) => {
    let upstreamClosedAt = null;
    let timer;
    t.after(() => clearInterval(timer));
    const { proxy } = await setup(t, (req, res) => {
        res.writeHead(200, { 'Content-Type': 'text/event-stream' });
        let i = 0;
        res.write(sseEvent(i++));
        timer = setInterval(() => res.write(sseEvent(i++)), 100);
        res.on('close', () => { upstreamClosedAt = performance.now(); clearInterval(timer); });
    });
    const base = await fdBaseline(proxy);
    const { req, res } = await openStream(proxy.url, { headers: POST_HEADERS, body: rpc('sse-hangup') });
    let text = '';
    res.on('data', (d) => { text += d; });
    res.on('error', () => {});
    while ((text.match(/\n\n/g) || []).length < 2) await sleep(20);
    const hungUpAt = performance.now();
    req.destroy();
    while (upstreamClosedAt === null && performance.now() - hungUpAt < 3000 * TIME_SCALE) await sleep(20);
    assert.ok(upstreamClosedAt !== null, 'the upstream request was still open 3 s after the client hung up');
    const lag = upstreamClosedAt - hungUpAt;
    t.diagnostic(`upstream request closed ${Math.round(lag)} ms after the client hung up`);
    assert.ok(lag < 1000 * TIME_SCALE, `upstream request closed ${Math.round(lag)} ms after the hang-up`);
    const l = await lineWhere(proxy, (x) => x.rpc_id === 'sse-hangup', 'client abort');
    expectFields(l, { status: 200, response: 'sse', error: 'client_aborted', level: 'warn' });
    assert.ok(l.sse_events >= 2, `sse_events ${l.sse_events}`);
    await assertServes(proxy);
    await assertFdsSettle(proxy, base, 'after client hang-up mid-SSE');
    await proxy.expectLogCount(3);
});

test('client_disconnect_mid_upload_is_survived_without_forwarding_or_fd_growth', only, async (t) => {
    const { up, proxy } = await setup(t);
    const base = await fdBaseline(proxy);
    const before = proxy.logs().length;
    for (let i = 0; i < 5; i++) {
        const c = await rawConnect(proxy.port);
        const body = Buffer.from(rpc(`upload-${i}`, 'tools/call', { name: 'x', arguments: { pad: 'u'.repeat(2000) } }));
        c.sock.write(rawPost(proxy.port, body.subarray(0, body.length >> 1), { contentLength: body.length }));
        await sleep(50);
        c.sock.destroy();
    }
    await sleep(500 * TIME_SCALE);
    const extra = proxy.logs().slice(before);
    t.diagnostic(`5 half uploads left ${extra.length} log lines: ${JSON.stringify(extra.map((l) => l.error))}`);
    for (const l of extra) expectFields(l, { error: 'client_aborted' }, 'half upload');
    assert.equal(up.hits().length, 0, 'a half-uploaded body reached the upstream');
    await assertServes(proxy);
    await assertFdsSettle(proxy, base, 'after half uploads');
    await proxy.expectLogCount(before + extra.length + 1);
});

// ---- upstream answers that are not JSON-RPC ---------------------------------------------------

test('upstream_401_with_www_authenticate_is_relayed_unchanged', only, async (t) => {
    const challenge = 'Bearer realm="mcp", error="invalid_token", ' +
        'resource_metadata="https://mcp.example/.well-known/oauth-protected-resource"';
    const body = '{"error":"invalid_token"}';
    const { proxy } = await setup(t, (req, res) => {
        res.writeHead(401, { 'WWW-Authenticate': challenge, 'Content-Type': 'application/json' });
        res.end(body);
    });
    const res = await request(proxy.url, { method: 'POST', headers: POST_HEADERS, body: rpc('u401') });
    assert.equal(res.status, 401);
    assert.equal(res.headers['www-authenticate'], challenge);
    assert.equal(res.text(), body);
    const l = await lineWhere(proxy, (x) => x.rpc_id === 'u401', '401');
    expectFields(l, { status: 401, response: 'json', error: undefined });
    await assertServes(proxy);
    await proxy.expectLogCount(2);
});

test('upstream_404_with_a_json_body_is_relayed', only, async (t) => {
    const body = '{"error":"not_found","detail":"no such session"}';
    const { proxy } = await setup(t, (req, res) => {
        res.writeHead(404, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
        res.end(body);
    });
    const res = await request(proxy.url, { method: 'POST', headers: POST_HEADERS, body: rpc('u404') });
    assert.equal(res.status, 404);
    assert.match(res.headers['content-type'], /^application\/json/);
    assert.equal(res.text(), body);
    const l = await lineWhere(proxy, (x) => x.rpc_id === 'u404', '404');
    expectFields(l, { status: 404, response: 'json', error: undefined, bytes_out: body.length });
    await assertServes(proxy);
    await proxy.expectLogCount(2);
});

test('upstream_html_500_page_is_relayed_with_status_and_content_type_not_turned_into_502', only, async (t) => {
    const page = '<!doctype html><html><body><h1>500 Internal Server Error</h1><p>nginx</p></body></html>\n';
    const { proxy } = await setup(t, (req, res) => {
        res.writeHead(500, { 'Content-Type': 'text/html; charset=utf-8' });
        res.end(page);
    });
    const res = await request(proxy.url, { method: 'POST', headers: POST_HEADERS, body: rpc('u500') });
    assert.equal(res.status, 500);
    assert.equal(res.headers['content-type'], 'text/html; charset=utf-8');
    assert.equal(res.text(), page);
    const l = await lineWhere(proxy, (x) => x.rpc_id === 'u500', '500');
    expectFields(l, { status: 500, response: 'other', error: undefined, level: 'warn', bytes_out: page.length });
    await assertServes(proxy);
    await proxy.expectLogCount(2);
});

// ---- strict_json ------------------------------------------------------------------------------

test('strict_json_on_answers_invalid_json_400_-32700_without_reaching_the_upstream', only, async (t) => {
    const { up, proxy } = await setup(t, undefined, ['--strict-json', 'on']);
    const bodies = ['hello', '{"jsonrpc":"2.0","id":1,"method":"x"', '{"a":1,}',
        Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d])]; // {"\xff":1}
    for (const body of bodies) {
        const res = await request(proxy.url, { method: 'POST', headers: POST_HEADERS, body });
        assertRpcError(res, 400, { code: -32700 });
        // jansson's line, column and text, in the answer as in the log line.
        assert.match(res.json().error.message, /^Parse error: invalid JSON at line \d+ column -?\d+: \S/,
            `error.message: ${res.text()}`);
    }
    assert.equal(up.hits().length, 0, 'invalid JSON reached the upstream under strict_json');
    const lines = await proxy.waitForLogs(bodies.length);
    for (const l of lines.slice(0, bodies.length)) {
        expectFields(l, { status: 400, error: 'invalid_json', rpc_error_code: -32700, level: 'warn' });
        assert.match(l.rpc_parse_error, /^invalid JSON at line \d+ column -?\d+: \S/, JSON.stringify(l));
    }
    await assertServes(proxy);
    await proxy.expectLogCount(bodies.length + 1);
});

test('strict_json_on_answers_json_that_is_not_jsonrpc_400_-32600', only, async (t) => {
    const { up, proxy } = await setup(t, undefined, ['--strict-json', 'on']);
    const bodies = ['[1,2]', '{"a":1}', '"just a string"', '42'];
    for (const body of bodies) {
        const res = await request(proxy.url, { method: 'POST', headers: POST_HEADERS, body });
        assertRpcError(res, 400, { code: -32600 });
    }
    assert.equal(up.hits().length, 0, 'non-JSON-RPC JSON reached the upstream under strict_json');
    const lines = await proxy.waitForLogs(bodies.length);
    for (const l of lines.slice(0, bodies.length)) {
        expectFields(l, { status: 400, error: 'invalid_request', rpc_error_code: -32600 });
    }
    await assertServes(proxy);
    await proxy.expectLogCount(bodies.length + 1);
});

test('strict_json_off_forwards_invalid_json_byte_for_byte_and_logs_rpc_parse_error', only, async (t) => {
    const answer = '{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}';
    const { up, proxy } = await setup(t, (req, res) => {
        res.writeHead(400, { 'Content-Type': 'application/json' });
        res.end(answer);
    });
    const bodies = [Buffer.from('hello'), Buffer.from('{"jsonrpc":"2.0","id":1,"method":"x"\r\n'),
        Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d]), Buffer.from('{"a":1}')];
    for (const body of bodies) {
        const res = await request(proxy.url, { method: 'POST', headers: POST_HEADERS, body });
        assert.equal(res.status, 400, 'the upstream answer is relayed');
        assert.equal(res.text(), answer);
    }
    const hits = up.hits();
    assert.equal(hits.length, bodies.length);
    for (const [i, b] of bodies.entries()) assert.ok(hits[i].body.equals(b), `body ${i} changed on the way`);
    const lines = await proxy.waitForLogs(bodies.length);
    for (const l of lines.slice(0, bodies.length)) {
        assert.equal(typeof l.rpc_parse_error, 'string', `rpc_parse_error missing: ${JSON.stringify(l)}`);
        expectFields(l, { status: 400, error: undefined, rpc_error_code: -32700 });
    }
    assertLogFileClean(proxy);
    await assertServes(proxy);
    await proxy.expectLogCount(bodies.length + 1);
});

// ---- pathological JSON ------------------------------------------------------------------------

// Sends each body, checks it is answered (upstream's 200) within 2 s and forwarded byte for
// byte, the log stays clean and memory bounded; returns the log lines of these bodies.
async function pathological(t, bodies, args = []) {
    const answer = '{"jsonrpc":"2.0","id":1,"result":{}}';
    const { up, proxy } = await setup(t, (req, res) => {
        res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': answer.length });
        res.end(answer);
    }, args);
    for (const [i, body] of bodies.entries()) {
        const t0 = performance.now();
        const res = await request(proxy.url, { method: 'POST', headers: POST_HEADERS, body, timeoutMs: 10000 * TIME_SCALE });
        const ms = performance.now() - t0;
        assert.equal(res.status, 200, `body ${i}: ${res.status} ${res.text().slice(0, 200)}`);
        assert.equal(res.text(), answer);
        assert.ok(ms < 2000 * TIME_SCALE, `body ${i} (${Buffer.byteLength(body)} bytes) answered after ${Math.round(ms)} ms`);
    }
    const hits = up.hits();
    assert.equal(hits.length, bodies.length);
    for (const [i, b] of bodies.entries()) {
        assert.ok(hits[i].body.equals(Buffer.isBuffer(b) ? b : Buffer.from(b)), `body ${i} changed on the way`);
    }
    const lines = (await proxy.waitForLogs(bodies.length)).slice(0, bodies.length);
    const text = assertLogFileClean(proxy);
    for (const l of lines) expectFields(l, { status: 200, error: undefined });
    assertRss(t, proxy, 'pathological JSON');
    await assertServes(proxy);
    await proxy.expectLogCount(bodies.length + 1);
    return { lines, text };
}

test('pathological_100000_deep_nesting_is_forwarded_and_logged_as_a_parse_error', only, async (t) => {
    const D = 100000;
    const { lines } = await pathological(t, [
        '['.repeat(D) + ']'.repeat(D),
        `{"jsonrpc":"2.0","id":"deep","method":"tools/call","params":{"name":"deep","arguments":${'{"a":'.repeat(D)}1${'}'.repeat(D)}}}`,
        `{"jsonrpc":"2.0","id":"deep-meta","method":"tools/call","params":{"_meta":{"openai/session":${'['.repeat(D)}${']'.repeat(D)}}}}`,
    ]);
    for (const l of lines) assert.equal(typeof l.rpc_parse_error, 'string', `deep nesting: ${JSON.stringify(l)}`);
    t.diagnostic(`parse errors: ${lines.map((l) => l.rpc_parse_error).join(' | ')}`);
});

test('pathological_invalid_utf8_inside_meta_strings_keeps_the_log_valid_utf8', only, async (t) => {
    const bad = (bytes) => Buffer.concat([
        Buffer.from('{"jsonrpc":"2.0","id":"utf8","method":"tools/call","params":{"name":"t","_meta":{"openai/session":"s-'),
        Buffer.from(bytes),
        Buffer.from('-e","openai/locale":"en-US"}}}'),
    ]);
    const { lines } = await pathological(t, [
        bad([0xff, 0xfe]), bad([0xc0, 0xaf]), bad([0xed, 0xa0, 0x80]), bad([0xe2, 0x82]), bad([0xf4, 0x90, 0x80, 0x80]),
    ]);
    for (const l of lines) {
        // jansson refuses invalid UTF-8: either a parse error, or a repaired (U+FFFD) value.
        assert.ok(l.rpc_parse_error || (l.openai_session || '').includes('\uFFFD'), `invalid UTF-8: ${JSON.stringify(l)}`);
    }
    t.diagnostic(`lines: ${lines.map((l) => l.rpc_parse_error || l.openai_session).join(' | ')}`);
});

test('pathological_1mib_openai_session_is_capped_in_the_log', only, async (t) => {
    const huge = 'S'.repeat(MiB);
    const ua = 'Mozilla/5.0 '.repeat(100000);
    const body = JSON.stringify({
        jsonrpc: '2.0', id: 'huge', method: 'tools/call',
        params: { name: 'n'.repeat(5000), _meta: { 'openai/session': huge, 'openai/userAgent': ua, 'openai/locale': 'é'.repeat(300) } },
    });
    const { lines, text } = await pathological(t, [body]);
    const [l] = lines;
    for (const k of ['openai_session', 'openai_user_agent', 'openai_locale', 'tool']) {
        const v = l[k];
        assert.equal(typeof v, 'string', `${k} missing: ${JSON.stringify(l).slice(0, 500)}`);
        assert.ok(Buffer.byteLength(v) <= 256 + 3, `${k} logged with ${Buffer.byteLength(v)} bytes`);
        assert.ok(v.endsWith('...'), `${k} cut without "...": ${v.slice(-10)}`);
    }
    assert.ok(l.openai_session.startsWith('SSSS'));
    assert.ok(!l.openai_locale.includes('\uFFFD'), 'the cut split a UTF-8 character');
    const longest = Math.max(...text.split('\n').map((x) => x.length));
    assert.ok(longest < 4096, `a log line is ${longest} bytes long`);
});

test('pathological_duplicate_keys_do_not_confuse_the_parser', only, async (t) => {
    const { lines } = await pathological(t, [
        '{"jsonrpc":"2.0","id":1,"id":2,"method":"tools/call","method":"tools/list","params":{"name":"a","name":"b",' +
            '"_meta":{"openai/session":"first","openai/session":"second"},"_meta":{"openai/session":"third"}}}',
        '{"jsonrpc":"2.0","jsonrpc":"1.0","id":3,"method":"tools/list","params":{}}',
    ]);
    t.diagnostic(`duplicate keys logged as: ${lines.map((l) => JSON.stringify({ rpc_id: l.rpc_id, rpc_method: l.rpc_method, tool: l.tool, openai_session: l.openai_session, rpc_parse_error: l.rpc_parse_error })).join(' ')}`);
    const [a] = lines;
    if (!a.rpc_parse_error) {
        assert.ok([1, 2].includes(a.rpc_id), `rpc_id ${a.rpc_id}`);
        assert.ok(['tools/call', 'tools/list'].includes(a.rpc_method));
        assert.ok(a.openai_session === undefined || ['first', 'second', 'third'].includes(a.openai_session));
    }
});

test('pathological_meta_of_the_wrong_type_is_ignored', only, async (t) => {
    const withMeta = (meta) => `{"jsonrpc":"2.0","id":"m","method":"tools/call","params":{"name":"t","_meta":${meta}}}`;
    const { lines } = await pathological(t, [
        withMeta('"openai/session"'), withMeta('["openai/session","v1/x"]'), withMeta('42'), withMeta('null'),
        withMeta('true'), withMeta('{"openai/session":{"nested":"v1/x"},"openai/userLocation":"Paris","openai/subject":[1]}'),
        '{"jsonrpc":"2.0","id":"m","method":"tools/call","params":"not an object"}',
        '{"jsonrpc":"2.0","id":"m","method":"tools/call","params":[{"_meta":{"openai/session":"v1/x"}}]}',
    ]);
    for (const l of lines) {
        const openai = Object.keys(l).filter((k) => k.startsWith('openai_'));
        assert.deepEqual(openai, [], `openai fields from a _meta of the wrong type: ${JSON.stringify(l)}`);
        expectFields(l, { rpc_method: 'tools/call', rpc_id: 'm' });
    }
});

test('pathological_10000_element_batch_is_forwarded_and_logged_once', only, async (t) => {
    const batch = Array.from({ length: 10000 }, (_, i) => ({ jsonrpc: '2.0', id: i, method: 'tools/list' }));
    const { lines } = await pathological(t, [JSON.stringify(batch)]);
    expectFields(lines[0], { batch: 10000, rpc_method: 'tools/list', rpc_id: 0 });
});

test('control_characters_and_nul_in_request_values_cannot_forge_log_lines', only, async (t) => {
    const forged = 'v1/a\n{"level":"info","msg":"mcp","forged":true}\r\u001b[31m"},"x":"';
    const withNul = 'v1/before\u0000after-the-nul';
    const body = JSON.stringify({
        jsonrpc: '2.0', id: 'ctl\n"', method: 'tools/call',
        params: { name: 'tool\r\nX-Injected: 1', _meta: { 'openai/session': forged, 'openai/subject': withNul, 'openai/locale': '\u2028\u2029' } },
    });
    const { lines, text } = await pathological(t, [body]);
    const [l] = lines;
    assert.equal(text.split('\n').length - 1, 1, 'one line for the exchange, nothing forged');
    assert.equal(l.forged, undefined);
    expectFields(l, { openai_session: forged, rpc_id: 'ctl\n"', tool: 'tool\r\nX-Injected: 1', openai_locale: '\u2028\u2029' });
    // logging.md: control characters are escaped; a NUL, which C strings cannot carry, is
    // logged as U+FFFD. Nothing cuts a value short.
    assert.equal(l.openai_subject, withNul.replace('\u0000', '\ufffd'),
        `a NUL inside a value: logged as ${JSON.stringify(l.openai_subject)}`);
});

// ---- Origin -----------------------------------------------------------------------------------

test('allowed_origins_rejects_a_foreign_origin_with_403_and_forwards_allowed_or_absent_ones', only, async (t) => {
    const { up, proxy } = await setup(t, undefined, ['--allowed-origins', 'https://chatgpt.com']);
    const bad = ['https://evil.example', 'https://chatgpt.com.evil.example', 'https://chatgpt.com/', 'http://chatgpt.com', 'null'];
    for (const [i, origin] of bad.entries()) {
        const res = await request(proxy.url, { method: 'POST', headers: [...POST_HEADERS, ['Origin', origin]], body: rpc(`o${i}`) });
        // Refused on the head alone: the body is neither read nor parsed, so no id is known.
        assertRpcError(res, 403, { id: null });
    }
    assert.equal(up.hits().length, 0, 'a request from a foreign Origin reached the upstream');
    const none = await request(proxy.url, { method: 'POST', headers: POST_HEADERS, body: rpc('no-origin') });
    assert.equal(none.status, 200, 'no Origin header: forwarded');
    const good = await request(proxy.url, { method: 'POST', headers: [...POST_HEADERS, ['Origin', 'https://chatgpt.com']], body: rpc('good') });
    assert.equal(good.status, 200, 'allowed Origin: forwarded');
    assert.equal(up.hits().length, 2);
    assert.equal(up.hits()[1].headers.origin, 'https://chatgpt.com');
    const lines = await proxy.waitForLogs(bad.length + 2);
    for (const [i] of bad.entries()) {
        expectFields(lines[i], { status: 403, error: 'origin_not_allowed', level: 'warn', rpc_id: undefined, rpc_method: undefined });
    }
    expectFields(lines.find((l) => l.rpc_id === 'no-origin'), { status: 200, error: undefined });
    expectFields(lines.find((l) => l.rpc_id === 'good'), { status: 200, error: undefined });
    await assertServes(proxy);
    await proxy.expectLogCount(bad.length + 3);
});

// ---- Host and Origin on defaults (DNS rebinding) ----------------------------------------------

// A raw request to mcpeek on its default loopback listener with the given extra headers (and
// Host), read back as one response. Returns { res, conn }.
async function rawAsk(proxy, { host, extra = [], body = rpc('rb') } = {}) {
    const conn = await rawConnect(proxy.port);
    const b = Buffer.from(body);
    const lines = ['POST /mcp HTTP/1.1', `Host: ${host ?? `127.0.0.1:${proxy.port}`}`, 'Content-Type: application/json',
        'Accept: application/json, text/event-stream', `Content-Length: ${b.length}`, ...extra];
    conn.sock.write(Buffer.concat([Buffer.from(`${lines.join('\r\n')}\r\n\r\n`), b]));
    const res = await conn.response();
    conn.sock.destroy();
    return { res, conn };
}

test('dns_rebinding_defaults_refuse_a_foreign_host_or_origin_on_loopback_with_403', only, async (t) => {
    const adminPort = await freePort();
    const up = await hostileUpstream(t);
    const proxy = await startMcpeek(t, up.url, { adminPort });
    const evilHost = await rawAsk(proxy, { host: 'evil.example.com' });
    const b1 = assertRpcError(evilHost.res, 403, { id: null, code: -32000 });
    assert.match(b1.error.message, /Host not allowed/, JSON.stringify(b1));
    const evilOrigin = await rawAsk(proxy, { extra: ['Origin: http://evil.example.com'] });
    const b2 = assertRpcError(evilOrigin.res, 403, { id: null, code: -32000 });
    assert.match(b2.error.message, /Origin not allowed/, JSON.stringify(b2));
    const rebound = await rawAsk(proxy, { host: `evil.example.com:${proxy.port}`, extra: ['Origin: http://evil.example.com:' + proxy.port] });
    assertRpcError(rebound.res, 403, { id: null });
    assert.equal(up.hits().length, 0, 'a refused request reached the upstream');
    // What a local client sends passes: loopback names with any port, local web origins, none.
    for (const [host, origin] of [[`localhost:${proxy.port}`, 'http://localhost:6274'], [`[::1]:${proxy.port}`, null],
        [`127.0.0.1:${proxy.port}`, 'https://127.0.0.1:3000'], ['LOCALHOST', 'http://[::1]:5173']]) {
        const { res } = await rawAsk(proxy, { host, extra: origin ? [`Origin: ${origin}`] : [] });
        assert.equal(res.status, 200, `Host ${host} Origin ${origin}: ${res.status} ${res.text()}`);
    }
    const lines = await proxy.expectLogCount(7);
    expectFields(lines[0], { status: 403, error: 'host_not_allowed', level: 'warn', http_method: 'POST', path: '/mcp', rpc_id: undefined });
    expectFields(lines[1], { status: 403, error: 'origin_not_allowed', level: 'warn', rpc_id: undefined });
    expectFields(lines[2], { status: 403, error: 'host_not_allowed' });
    for (const l of lines.slice(3)) expectFields(l, { status: 200, error: undefined });
    const { samples } = await scrape(adminPort);
    assert.equal(sampleValue(samples, 'mcpeek_access_denied_total', { reason: 'host' }), 2);
    assert.equal(sampleValue(samples, 'mcpeek_access_denied_total', { reason: 'origin' }), 1);
    assert.equal(sampleValue(samples, 'mcpeek_access_denied_total', { reason: 'token' }), 0);
});

test('allowed_hosts_names_the_public_deployment_and_star_turns_the_check_off', only, async (t) => {
    const up = await hostileUpstream(t);
    const proxy = await startMcpeek(t, up.url, { args: ['--allowed-hosts', 'mcp.example.com api.example.com:8443'] });
    assert.equal((await rawAsk(proxy, { host: 'MCP.example.com' })).res.status, 200);
    assert.equal((await rawAsk(proxy, { host: 'api.example.com:8443' })).res.status, 200);
    assertRpcError((await rawAsk(proxy, { host: 'api.example.com:443' })).res, 403);
    assertRpcError((await rawAsk(proxy, { host: `127.0.0.1:${proxy.port}` })).res, 403);
    // The Origin default stays the loopback one (the listener is): a foreign page is refused.
    assertRpcError((await rawAsk(proxy, { host: 'mcp.example.com', extra: ['Origin: https://evil.example'] })).res, 403);
    const lines = await proxy.expectLogCount(5);
    assert.deepEqual(lines.map((l) => l.error ?? null), [null, null, 'host_not_allowed', 'host_not_allowed', 'origin_not_allowed']);
    // '*' accepts any Host and Origin.
    const any = await startMcpeek(t, up.url, { args: ['--allowed-hosts', '*', '--allowed-origins', '*'] });
    const { res } = await rawAsk(any, { host: 'tunnel.example.net', extra: ['Origin: https://chatgpt.com'] });
    assert.equal(res.status, 200, res.text());
});

test('access_is_checked_on_the_head_before_100_continue_and_before_the_body', only, async (t) => {
    const dir = tmpDir(t);
    fs.writeFileSync(path.join(dir, 'tokens'), 'the-token\n');
    const { up, proxy } = await setup(t, undefined, ['--auth-tokens-file', path.join(dir, 'tokens')]);
    for (const [extra, status, error] of [[[], 401, 'unauthorized'], [['Origin: http://evil.example.com', 'Authorization: Bearer the-token'], 403, 'origin_not_allowed']]) {
        // A 1 MiB upload announced with Expect: 100-continue: the refusal comes at once, with
        // no 100 before it, and the client need not send a byte of the body.
        const conn = await rawConnect(proxy.port);
        conn.sock.write([`POST /mcp HTTP/1.1`, `Host: 127.0.0.1:${proxy.port}`, 'Content-Type: application/json',
            'Content-Length: 1048576', 'Expect: 100-continue', 'Mcp-Session-Id: sess-refused', ...extra].join('\r\n') + '\r\n\r\n');
        const res = await conn.response();
        assert.equal(res.status, status, `first response: ${conn.got().toString('latin1').slice(0, 200)}`);
        assert.ok(!conn.got().toString('latin1').includes('100 Continue'), '100 Continue sent to a refused client');
        if (status === 401) assert.match(res.headers['www-authenticate'] || '', /^Bearer/);
        assert.equal(res.headers.connection, 'close');
        await conn.closed;
        const line = (await proxy.waitForLogs(1, (l) => l.error === error)).find((l) => l.error === error);
        expectFields(line, { status, error, bytes_in: 0, mcp_session_id: 'sess-refused', rpc_method: undefined });
    }
    assert.equal(up.hits().length, 0);
    await proxy.expectLogCount(2);
});

// ---- bearer tokens ----------------------------------------------------------------------------

test('auth_tokens_file_answers_missing_or_wrong_bearer_401_and_strips_the_right_one', only, async (t) => {
    const dir = tmpDir(t);
    const tokA = `tokA-${randomBytes(12).toString('hex')}`;
    const tokB = `tokB-${randomBytes(12).toString('hex')}`;
    fs.writeFileSync(path.join(dir, 'tokens'), `# clients\n\n${tokA}\n${tokB}\n`);
    const { up, proxy } = await setup(t, undefined, ['--auth-tokens-file', path.join(dir, 'tokens')]);
    const wrong = [null, 'Bearer nope', `Basic ${Buffer.from(`u:${tokA}`).toString('base64')}`, `Bearer ${tokA.slice(0, -1)}`,
        `Bearer ${tokA}x`, 'Bearer ', `Bearer ${tokA} ${tokB}`, tokA];
    for (const [i, auth] of wrong.entries()) {
        const headers = auth === null ? POST_HEADERS : [...POST_HEADERS, ['Authorization', auth]];
        const res = await request(proxy.url, { method: 'POST', headers, body: rpc(`w${i}`) });
        assertRpcError(res, 401, { id: null }); // refused on the head: the body is not parsed
        assert.match(res.headers['www-authenticate'] || '', /^Bearer/, `WWW-Authenticate for ${auth}`);
    }
    assert.equal(up.hits().length, 0, 'an unauthenticated request reached the upstream');
    for (const [id, tok] of [['ra', tokA], ['rb', tokB]]) {
        const res = await request(proxy.url, { method: 'POST', headers: [...POST_HEADERS, ['Authorization', `Bearer ${tok}`]], body: rpc(id) });
        assert.equal(res.status, 200, `right token ${id}: ${res.status} ${res.text()}`);
    }
    assert.equal(up.hits().length, 2);
    for (const h of up.hits()) assert.equal(h.headers.authorization, undefined, 'mcpeek forwarded its own bearer token');
    const lines = await proxy.waitForLogs(wrong.length + 2);
    for (const [i] of wrong.entries()) {
        expectFields(lines[i], { status: 401, error: 'unauthorized', level: 'warn', rpc_id: undefined });
    }
    const res = await request(proxy.url, { method: 'POST', headers: [...POST_HEADERS, ['Authorization', `Bearer ${tokA}`]], body: rpc('after', 'ping', {}) });
    assert.equal(res.status, 200, 'still serves');
    await proxy.expectLogCount(wrong.length + 3);
    const logText = fs.readFileSync(proxy.logFile, 'utf8');
    for (const tok of [tokA, tokB, tokA.slice(0, -1)]) {
        assert.ok(!logText.includes(tok), 'a bearer token is in the access log');
        assert.ok(!proxy.proc.stderrText().includes(tok), 'a bearer token is on stderr');
    }
});

test('without_auth_tokens_file_authorization_reaches_the_upstream_untouched', only, async (t) => {
    const { up, proxy } = await setup(t);
    const auth = 'Bearer upstream-own-token.with.dots==';
    const res = await request(proxy.url, { method: 'POST', headers: [...POST_HEADERS, ['Authorization', auth]], body: rpc('pass') });
    assert.equal(res.status, 200);
    assert.equal(up.hits()[0].headers.authorization, auth);
    const l = await lineWhere(proxy, (x) => x.rpc_id === 'pass', 'pass-through');
    expectFields(l, { status: 200, error: undefined });
    assert.ok(!fs.readFileSync(proxy.logFile, 'utf8').includes('upstream-own-token'), 'Authorization in the access log');
    await assertServes(proxy);
    await proxy.expectLogCount(2);
});

test('sighup_after_changing_auth_tokens_file_makes_the_new_token_valid_and_the_old_one_invalid', only, async (t) => {
    const dir = tmpDir(t);
    const up = await hostileUpstream(t);
    const port = await freePort();
    const tokens = path.join(dir, 'tokens');
    const log = path.join(dir, 'access.log');
    const conf = path.join(dir, 'mcpeek.conf');
    const oldTok = `old-${randomBytes(12).toString('hex')}`;
    const newTok = `new-${randomBytes(12).toString('hex')}`;
    fs.writeFileSync(tokens, `${oldTok}\n`);
    fs.writeFileSync(conf, [`listen 127.0.0.1:${port}`, `upstream ${up.url}`, `log_file ${log}`, 'admin_listen off',
        'workers 1', `auth_tokens_file ${tokens}`, ''].join('\n'));
    const m = await startMcpeekFromConfig(t, conf, { port, logFile: log });
    const call = (tok, id) => request(m.url, {
        method: 'POST', headers: [...POST_HEADERS, ...(tok ? [['Authorization', `Bearer ${tok}`]] : [])], body: rpc(id, 'ping', {}),
    });
    assert.equal((await call(oldTok, 'old-1')).status, 200, 'old token before the reload');
    assertRpcError(await call(newTok, 'new-1'), 401, { id: null });
    fs.writeFileSync(tokens, `# rotated\n${newTok}\n`);
    m.proc.kill('SIGHUP');
    const deadline = Date.now() + 3000 * TIME_SCALE;
    let n = 2;
    let status;
    do {
        await sleep(50);
        status = (await call(newTok, `new-poll-${n}`)).status;
        n += 1;
    } while (status !== 200 && Date.now() < deadline);
    assert.equal(status, 200, 'the new token is not accepted after SIGHUP');
    assertRpcError(await call(oldTok, 'old-2'), 401, { id: null });
    assert.equal((await call(newTok, 'new-2')).status, 200, 'still serves');
    const logDeadline = Date.now() + 3000 * TIME_SCALE; // lines are written in batches
    while (m.readLines().length < n + 2 && Date.now() < logDeadline) await sleep(25);
    await sleep(200);
    const lines = m.readLines();
    assert.equal(lines.length, n + 2, `one line per exchange:\n${fmtLines(lines)}`);
    expectFields(lines[lines.length - 2], { status: 401, error: 'unauthorized' });
    expectFields(lines.find((l) => l.rpc_id === 'old-1'), { status: 200 });
    expectFields(lines.find((l) => l.rpc_id === 'new-2'), { status: 200 });
    for (const h of up.requests) assert.equal(h.headers.authorization, undefined);
    const logText = fs.readFileSync(log, 'utf8');
    for (const tok of [oldTok, newTok]) {
        assert.ok(!logText.includes(tok), 'a bearer token is in the access log');
        assert.ok(!m.proc.stderrText().includes(tok), `a bearer token is on stderr: ${m.proc.stderrText()}`);
    }
    t.diagnostic(`stderr after reload: ${m.proc.stderrText().trim().split('\n').slice(-2).join(' / ')}`);
});

// ---- privacy ----------------------------------------------------------------------------------

const ARTICLE_LOCATION = {
    city: 'Vũng Tàu', country: 'VN', latitude: '10.34599', longitude: '107.08426', timezone: 'Asia/Ho_Chi_Minh',
};
const chatgptCall = (id, meta, args = {}) => JSON.stringify({
    jsonrpc: '2.0', id, method: 'tools/call',
    params: {
        name: 'create_matching_question', arguments: args,
        _meta: { 'openai/session': 'v1/conv-1', 'openai/locale': 'vi-VN', 'openai/userLocation': ARTICLE_LOCATION, ...meta },
    },
});

async function locationLine(t, mode) {
    const { proxy } = await setup(t, undefined, ['--user-location', mode]);
    const res = await request(proxy.url, { method: 'POST', headers: POST_HEADERS, body: chatgptCall('loc', {}) });
    assert.equal(res.status, 200);
    const l = await lineWhere(proxy, (x) => x.rpc_id === 'loc', 'location');
    expectFields(l, { status: 200, openai_session: 'v1/conv-1', openai_locale: 'vi-VN' });
    await assertServes(proxy);
    await proxy.expectLogCount(2);
    return { l, text: fs.readFileSync(proxy.logFile, 'utf8') };
}

test('user_location_coarse_logs_no_coordinates', only, async (t) => {
    const { l, text } = await locationLine(t, 'coarse');
    assert.deepEqual(l.openai_user_location, { city: 'Vũng Tàu', country: 'VN', timezone: 'Asia/Ho_Chi_Minh' });
    assert.ok(!text.includes('10.34599') && !text.includes('107.08426') && !text.includes('latitude'), 'coordinates logged');
});

test('user_location_full_logs_the_coordinates', only, async (t) => {
    const { l } = await locationLine(t, 'full');
    assert.deepEqual(l.openai_user_location, ARTICLE_LOCATION);
});

test('user_location_off_logs_no_location_at_all', only, async (t) => {
    const { l, text } = await locationLine(t, 'off');
    assert.equal(l.openai_user_location, undefined);
    for (const s of ['Vũng Tàu', 'Asia/Ho_Chi_Minh', '10.34599', '107.08426', 'user_location']) {
        assert.ok(!text.includes(s), `${s} logged with user_location off`);
    }
});

test('pseudonymize_key_file_logs_hmac_sha256_of_subject_and_org_stable_across_restart', only, async (t) => {
    const dir = tmpDir(t);
    const keyFile = path.join(dir, 'pseudonymize.key');
    const key = randomBytes(32);
    fs.writeFileSync(keyFile, key);
    const log = path.join(dir, 'access.log');
    const subject = `v1/user_${randomBytes(8).toString('hex')}`;
    const org = `v1/org_${randomBytes(8).toString('hex')}`;
    const hmac = (v) => `hmac-sha256:${createHmac('sha256', key).update(v).digest('hex')}`;
    const up = await hostileUpstream(t);
    const run = async (st, id, meta) => {
        const proxy = await startMcpeek(st, up.url, { args: ['--pseudonymize-key-file', keyFile], logFile: log });
        const res = await request(proxy.url, { method: 'POST', headers: POST_HEADERS, body: chatgptCall(id, meta) });
        assert.equal(res.status, 200);
        const l = await lineWhere(proxy, (x) => x.rpc_id === id, id);
        await assertServes(proxy);
        return l;
    };
    let first;
    let second;
    await t.test('first run', async (st) => { first = await run(st, 'p1', { 'openai/subject': subject, 'openai/organization': org }); });
    await t.test('after a restart', async (st) => { second = await run(st, 'p2', { 'openai/subject': subject, 'openai/organization': org }); });
    let other;
    await t.test('another user', async (st) => { other = await run(st, 'p3', { 'openai/subject': `${subject}-2` }); });
    expectFields(first, { openai_subject: hmac(subject), openai_org: hmac(org), openai_session: 'v1/conv-1' });
    expectFields(second, { openai_subject: first.openai_subject, openai_org: first.openai_org });
    assert.match(first.openai_subject, /^hmac-sha256:[0-9a-f]{64}$/);
    expectFields(other, { openai_subject: hmac(`${subject}-2`) });
    assert.notEqual(other.openai_subject, first.openai_subject);
    const text = fs.readFileSync(log, 'utf8');
    const lines = text.split('\n').filter(Boolean).map((l) => JSON.parse(l));
    assert.equal(lines.filter((l) => l.msg === 'mcp').length, 6, 'one line per exchange over three runs');
    // Each run's SIGTERM writes its open conversation, pseudonymized like the exchange lines.
    for (const c of lines.filter((l) => l.msg === 'conversation')) {
        assert.equal(c.reason, 'shutdown');
        if (c.openai_subject !== undefined) assert.match(c.openai_subject, /^hmac-sha256:[0-9a-f]{64}$/);
    }
    assert.ok(!text.includes(subject.slice(3)) && !text.includes(org.slice(3)), 'a raw id is in the log');
});

test('tool_arguments_headers_query_and_bodies_never_reach_the_log', only, async (t) => {
    const marker = `SECRET-${randomBytes(8).toString('hex')}`;
    const { proxy } = await setup(t, (req, res, body) => {
        if (req.url.includes('sse')) {
            res.writeHead(200, { 'Content-Type': 'text/event-stream' });
            res.end(`event: message\ndata: {"jsonrpc":"2.0","id":"s","result":{"content":[{"type":"text","text":"${marker}"}]}}\n\n`);
        } else {
            // The error answers the request's own id. Its code and message are logged
            // (rpc_error_code, rpc_error_message: the server's own words); its data never is.
            const out = JSON.stringify({ jsonrpc: '2.0', id: JSON.parse(body).id, error: { code: -32602, message: 'bad arguments', data: marker } });
            res.writeHead(200, { 'Content-Type': 'application/json', 'X-Echo': marker });
            res.end(out);
        }
    });
    const body = chatgptCall('args', { 'vendor/secret': marker, 'openai/widgetState': marker },
        { secret: marker, nested: { deep: [marker] }, [marker]: 1 });
    const headers = [...POST_HEADERS, ['Cookie', `sid=${marker}`], ['X-Api-Key', marker], ['User-Agent', marker]];
    const r1 = await request(`${proxy.url}?token=${marker}`, { method: 'POST', headers, body });
    assert.equal(r1.status, 200);
    assert.equal(r1.json().error.data, marker, 'the answer reached the client');
    const r2 = await request(`${proxy.url}?sse=1`, { method: 'POST', headers, body });
    assert.ok(r2.text().includes(marker));
    const lines = await proxy.waitForLogs(2);
    expectFields(lines[0], { tool: 'create_matching_question', rpc_error_code: -32602, rpc_error_message: 'bad arguments', path: '/mcp' });
    expectFields(lines[1], { response: 'sse', sse_events: 1 });
    await assertServes(proxy);
    const text = fs.readFileSync(proxy.logFile, 'utf8');
    assert.ok(!text.includes(marker), `the marker reached the access log:\n${text}`);
    assert.ok(!proxy.proc.stderrText().includes(marker), 'the marker reached stderr');
    await proxy.expectLogCount(3);
});
