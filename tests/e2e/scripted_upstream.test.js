// mcpeek in front of a scripted node upstream, for what a real MCP server will not do on cue:
// paced and broken SSE, a dead upstream, huge and slowly read answers, clients hanging up,
// auth challenges, other paths, hop-by-hop headers, odd bodies, size limits, connection reuse.
// Every test also checks that each exchange produced exactly one log line.

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import test from 'node:test';
import {
    CHECK_RSS, DIRECT, expectFields, fmtLines, freePort, openStream, POST_HEADERS, request, RSS_LIMIT_MB, sleep,
    startMcpeek,
} from './lib/harness.js';
import { jsonResult, startScriptedUpstream } from './lib/scripted-upstream.js';

const MiB = 1024 * 1024;

async function setup(t, handler, mcpeekOpts = {}) {
    const up = await startScriptedUpstream(t, handler);
    const proxy = await startMcpeek(t, up.url, mcpeekOpts);
    return { up, proxy };
}

const rpcBody = (id, method = 'tools/call', params = { name: 'probe', arguments: {} }) =>
    JSON.stringify({ jsonrpc: '2.0', id, method, params });

// Writes size bytes of SSE (events of about eventBytes) honouring backpressure; resolves the
// sha256 of what was written. stats.written is updated as it goes.
function pumpSse(res, size, eventBytes, stats) {
    const hash = createHash('sha256');
    return new Promise((resolve) => {
        const pump = () => {
            while (stats.written < size) {
                const payload = randomBytes(Math.floor((eventBytes - 40) * 3 / 4)).toString('base64');
                const ev = Buffer.from(`event: message\ndata: {"p":"${payload}"}\n\n`);
                hash.update(ev);
                stats.written += ev.length;
                stats.events += 1;
                if (!res.write(ev)) { res.once('drain', pump); return; }
            }
            res.end();
            resolve(hash.digest('hex'));
        };
        pump();
    });
}

test('sse_events_reach_the_client_one_by_one_as_the_upstream_sends_them', async (t) => {
    const sent = [];
    const { proxy } = await setup(t, (req, res) => {
        res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
        let i = 0;
        const tick = () => {
            const msg = i < 4
                ? { jsonrpc: '2.0', method: 'notifications/progress', params: { progressToken: 't', progress: i + 1, total: 4 } }
                : { jsonrpc: '2.0', id: 5, result: { content: [] } };
            sent.push(performance.now());
            res.write(`event: message\ndata: ${JSON.stringify(msg)}\n\n`);
            i += 1;
            if (i === 5) res.end(); else setTimeout(tick, 300);
        };
        tick();
    });
    const { res } = await openStream(proxy.url, { headers: POST_HEADERS, body: rpcBody(5, 'tools/call', { name: 'slow' }) });
    assert.equal(res.statusCode, 200);
    assert.match(res.headers['content-type'], /^text\/event-stream/);
    const arrivals = [];
    let buf = '';
    res.setEncoding('utf8');
    res.on('data', (d) => {
        buf += d;
        for (let i = buf.indexOf('\n\n'); i >= 0; i = buf.indexOf('\n\n')) {
            buf = buf.slice(i + 2);
            arrivals.push(performance.now());
        }
    });
    await once(res, 'end');
    assert.equal(arrivals.length, 5, 'all five events arrived');
    const lags = arrivals.map((a, i) => Math.round(a - sent[i]));
    for (let i = 0; i < 5; i++) {
        assert.ok(lags[i] < 150, `event ${i} reached the client ${lags[i]} ms after it was sent (lags ${lags})`);
        if (i < 4) {
            assert.ok(arrivals[i] < sent[i + 1],
                `event ${i} arrived after event ${i + 1} was sent: buffered (lags ${lags})`);
        }
    }
    const [l] = await proxy.expectLogCount(DIRECT ? 0 : 1);
    if (DIRECT) return;
    expectFields(l, {
        status: 200, response: 'sse', sse_events: 5, rpc_method: 'tools/call', tool: 'slow', rpc_id: 5,
    });
    assert.ok(l.duration_ms >= 1100, `duration_ms ${l.duration_ms} for a 1.2 s stream`);
});

test('upstream_reset_mid_sse_ends_the_client_stream_and_logs_upstream_reset', async (t) => {
    const { proxy } = await setup(t, (req, res) => {
        res.writeHead(200, { 'Content-Type': 'text/event-stream' });
        res.write('event: message\ndata: {"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}}\n\n');
        res.write('event: message\ndata: {"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":2}}\n\n');
        setTimeout(() => req.socket.destroy(), 200);
    });
    const { res } = await openStream(proxy.url, { headers: POST_HEADERS, body: rpcBody(6) });
    assert.equal(res.statusCode, 200);
    let text = '';
    res.on('data', (d) => { text += d; });
    res.on('error', () => {});
    const closed = new Promise((resolve) => res.on('close', resolve)); // once() rejects on 'error'
    const timeout = sleep(3000).then(() => 'timeout');
    assert.notEqual(await Promise.race([closed, timeout]), 'timeout',
        'the client stream did not end within 3 s of the upstream reset');
    assert.equal((text.match(/\n\n/g) || []).length, 2, `both events before the reset arrived: ${text}`);
    t.diagnostic(`client saw the response as complete: ${res.complete}`);
    const [l] = await proxy.expectLogCount(DIRECT ? 0 : 1);
    if (DIRECT) return;
    assert.equal(l.error, 'upstream_reset', `log line: ${JSON.stringify(l)}`);
    expectFields(l, { response: 'sse', sse_events: 2 });
});

test('upstream_reset_mid_json_is_not_passed_off_as_a_complete_answer', async (t) => {
    // A proxy that ends its answer cleanly after an upstream reset hands the client truncated
    // JSON as if it were whole; the client must see the answer cut (no final chunk / short body).
    const { proxy } = await setup(t, (req, res) => {
        const withLength = req.url.includes('len=1');
        res.writeHead(200, { 'Content-Type': 'application/json', ...(withLength ? { 'Content-Length': '100000' } : {}) });
        res.write(`{"jsonrpc":"2.0","id":7,"result":{"text":"${'y'.repeat(30000)}`);
        setTimeout(() => req.socket.destroy(), 100);
    });
    for (const variant of ['len=1', 'len=0']) {
        const { res } = await openStream(`${proxy.url}?${variant}`, { headers: POST_HEADERS, body: rpcBody(7) });
        assert.equal(res.statusCode, 200);
        let bytes = 0;
        res.on('data', (d) => { bytes += d.length; });
        res.on('error', () => {});
        await new Promise((resolve) => res.on('close', resolve));
        assert.ok(bytes >= 30000, `${variant}: the bytes sent before the reset arrived (${bytes})`);
        assert.equal(res.complete, false,
            `${variant}: upstream reset after ${bytes} bytes of JSON, yet the client got a complete ` +
            `HTTP response (clean end): truncation hidden from the client`);
    }
    if (DIRECT) return;
    const lines = await proxy.expectLogCount(2);
    for (const l of lines) {
        expectFields(l, { status: 200, error: 'upstream_reset' }, 'JSON cut by an upstream reset');
    }
});

test('upstream_down_answers_502_with_a_jsonrpc_error_carrying_the_request_id', async (t) => {
    if (DIRECT) return t.skip('mcpeek-only behaviour');
    const deadPort = await freePort();
    const proxy = await startMcpeek(t, `http://127.0.0.1:${deadPort}/mcp`);
    for (const id of ['abc-7', 8]) {
        const res = await request(proxy.url, { method: 'POST', headers: POST_HEADERS, body: rpcBody(id) });
        assert.equal(res.status, 502, `status for id ${id}: ${res.status} ${res.text()}`);
        assert.match(res.headers['content-type'] || '', /^application\/json/);
        const body = res.json();
        assert.equal(body.jsonrpc, '2.0', `body: ${res.text()}`);
        assert.deepEqual(body.id, id, `the error carries the request id: ${res.text()}`);
        assert.equal(typeof body.error?.code, 'number', `error.code: ${res.text()}`);
        assert.equal(typeof body.error?.message, 'string', `error.message: ${res.text()}`);
    }
    const lines = await proxy.expectLogCount(2);
    for (const [i, id] of ['abc-7', 8].entries()) {
        expectFields(lines[i], { status: 502 });
        assert.equal(lines[i].error, 'upstream_connect', `log line: ${JSON.stringify(lines[i])}`);
        assert.deepEqual(lines[i].rpc_id, id);
    }
});

test('huge_json_answer_streams_through_exactly_with_bounded_memory', async (t) => {
    const size = 50 * MiB;
    const chunks = [];
    const head = Buffer.from('{"jsonrpc":"2.0","id":9,"result":{"content":[{"type":"text","text":"');
    const tail = Buffer.from('"}]}}');
    chunks.push(head);
    let n = head.length + tail.length;
    while (n < size) {
        const c = Buffer.from(randomBytes(Math.min(48 * 1024, Math.ceil((size - n) * 3 / 4))).toString('base64'));
        chunks.push(c);
        n += c.length;
    }
    chunks.push(tail);
    const total = chunks.reduce((a, c) => a + c.length, 0);
    const want = createHash('sha256');
    for (const c of chunks) want.update(c);
    const wantHex = want.digest('hex');

    const { proxy } = await setup(t, (req, res) => {
        res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': String(total) });
        let i = 0;
        const pump = () => {
            while (i < chunks.length) {
                if (!res.write(chunks[i++])) { res.once('drain', pump); return; }
            }
            res.end();
        };
        pump();
    });
    const { res } = await openStream(proxy.url, { headers: POST_HEADERS, body: rpcBody(9) });
    assert.equal(res.statusCode, 200);
    const got = createHash('sha256');
    let bytes = 0;
    res.on('data', (d) => { got.update(d); bytes += d.length; });
    await once(res, 'end');
    assert.equal(bytes, total, `received ${bytes} of ${total} bytes`);
    assert.equal(got.digest('hex'), wantHex, 'sha256 of the received body');
    if (DIRECT) return;
    if (CHECK_RSS) {
        const hwm = proxy.vmHWMkB();
        t.diagnostic(`mcpeek VmHWM after 50 MiB: ${(hwm / 1024).toFixed(1)} MiB`);
        assert.ok(hwm < RSS_LIMIT_MB * 1024, `mcpeek peak RSS ${(hwm / 1024).toFixed(1)} MiB >= ${RSS_LIMIT_MB} MiB`);
    }
    const [l] = await proxy.expectLogCount(1);
    expectFields(l, { status: 200, response: 'json' });
    assert.equal(l.bytes_out, total, `bytes_out ${l.bytes_out} vs body ${total}`);
});

test('slow_client_reading_a_20mib_sse_answer_keeps_mcpeek_memory_bounded', async (t) => {
    const size = 20 * MiB;
    const stats = { written: 0, events: 0 };
    let sentHash;
    const { proxy } = await setup(t, (req, res) => {
        res.writeHead(200, { 'Content-Type': 'text/event-stream' });
        sentHash = pumpSse(res, size, 16 * 1024, stats);
    });
    const hwmBefore = proxy.direct ? 0 : proxy.vmHWMkB();
    const { res } = await openStream(proxy.url, { headers: POST_HEADERS, body: rpcBody(10) });
    res.pause();
    await sleep(2000); // the client reads nothing: everything in flight must be held back
    const writtenWhilePaused = stats.written;
    const hwmPaused = proxy.direct ? 0 : proxy.vmHWMkB();
    t.diagnostic(`upstream wrote ${(writtenWhilePaused / MiB).toFixed(1)} MiB while the client was paused; ` +
        `mcpeek VmHWM ${(hwmBefore / 1024).toFixed(1)} -> ${(hwmPaused / 1024).toFixed(1)} MiB`);
    assert.ok(writtenWhilePaused < size,
        'the upstream wrote all 20 MiB while the client read nothing: backpressure did not reach it');
    // Then read slowly: small bites with pauses in between.
    const got = createHash('sha256');
    let bytes = 0;
    res.on('data', (d) => {
        got.update(d);
        bytes += d.length;
        if (bytes < 4 * MiB) { res.pause(); setTimeout(() => res.resume(), 5); }
    });
    res.resume();
    await once(res, 'end');
    assert.equal(bytes, stats.written, `received ${bytes} of ${stats.written} bytes`);
    assert.equal(got.digest('hex'), await sentHash, 'sha256 of the received SSE body');
    if (DIRECT) return;
    if (CHECK_RSS) {
        const hwm = proxy.vmHWMkB();
        const growth = (hwm - hwmBefore) / 1024;
        assert.ok(growth < 12, `mcpeek peak RSS grew by ${growth.toFixed(1)} MiB for a paused client: buffering`);
        assert.ok(hwm < RSS_LIMIT_MB * 1024, `mcpeek peak RSS ${(hwm / 1024).toFixed(1)} MiB`);
    }
    const [l] = await proxy.expectLogCount(1);
    expectFields(l, { response: 'sse', sse_events: stats.events, bytes_out: stats.written });
});

test('client_disconnecting_mid_sse_closes_the_upstream_request_and_logs_client_aborted', async (t) => {
    let upstreamClosedAt = null;
    let timer;
    const { proxy } = await setup(t, (req, res) => {
        res.writeHead(200, { 'Content-Type': 'text/event-stream' });
        let i = 0;
        timer = setInterval(() => {
            res.write(`event: message\ndata: {"jsonrpc":"2.0","method":"notifications/message","params":{"n":${i++}}}\n\n`);
        }, 200);
        res.on('close', () => { upstreamClosedAt = performance.now(); clearInterval(timer); });
    });
    t.after(() => clearInterval(timer));
    const { req, res } = await openStream(proxy.url, { headers: POST_HEADERS, body: rpcBody(11) });
    let text = '';
    res.on('data', (d) => { text += d; });
    res.on('error', () => {});
    while ((text.match(/\n\n/g) || []).length < 2) await sleep(20);
    const hungUpAt = performance.now();
    req.destroy();
    while (upstreamClosedAt === null && performance.now() - hungUpAt < 2000) await sleep(20);
    assert.ok(upstreamClosedAt !== null, 'the upstream request was still open 2 s after the client hung up');
    t.diagnostic(`upstream closed ${Math.round(upstreamClosedAt - hungUpAt)} ms after the client hung up`);
    const [l] = await proxy.expectLogCount(DIRECT ? 0 : 1);
    if (DIRECT) return;
    assert.equal(l.error, 'client_aborted', `log line: ${JSON.stringify(l)}`);
    expectFields(l, { response: 'sse' });
    assert.ok(l.sse_events >= 2, `sse_events ${l.sse_events}`);
});

test('401_with_www_authenticate_is_relayed_unchanged', async (t) => {
    const challenge = 'Bearer realm="mcp", error="invalid_token", ' +
        'resource_metadata="http://127.0.0.1:1/.well-known/oauth-protected-resource"';
    const body = '{"error":"invalid_token","error_description":"The access token expired"}';
    const { up, proxy } = await setup(t, (req, res) => {
        res.writeHead(401, { 'WWW-Authenticate': challenge, 'Content-Type': 'application/json' });
        res.end(body);
    });
    const res = await request(proxy.url, {
        method: 'POST', headers: [...POST_HEADERS, ['Authorization', 'Bearer expired']], body: rpcBody(12),
    });
    assert.equal(res.status, 401);
    assert.equal(res.headers['www-authenticate'], challenge);
    assert.equal(res.text(), body);
    assert.equal(up.requests[0].headers.authorization, 'Bearer expired');
    const [l] = await proxy.expectLogCount(DIRECT ? 0 : 1);
    if (DIRECT) return;
    expectFields(l, { status: 401, rpc_method: 'tools/call' });
});

test('non_mcp_path_is_proxied_to_the_upstream_origin', async (t) => {
    const meta = JSON.stringify({ resource: 'http://127.0.0.1/mcp', authorization_servers: ['http://127.0.0.1:1'] });
    const { up, proxy } = await setup(t, (req, res) => {
        if (req.url.startsWith('/.well-known/oauth-protected-resource')) {
            res.writeHead(200, { 'Content-Type': 'application/json' });
            res.end(meta);
        } else {
            res.writeHead(404);
            res.end();
        }
    });
    const res = await request(`${proxy.origin}/.well-known/oauth-protected-resource?probe=1`);
    assert.equal(res.status, 200, `status ${res.status}: ${res.text()}`);
    assert.equal(res.text(), meta);
    assert.equal(up.requests.length, 1);
    assert.equal(up.requests[0].method, 'GET');
    assert.equal(up.requests[0].url, '/.well-known/oauth-protected-resource?probe=1');
    const [l] = await proxy.expectLogCount(DIRECT ? 0 : 1);
    if (DIRECT) return;
    expectFields(l, { http_method: 'GET', status: 200 });
    assert.match(l.path, /^\/\.well-known\/oauth-protected-resource/);
    expectFields(l, { rpc_method: undefined });
});

test('headers_are_relayed_both_ways_and_hop_by_hop_headers_dropped', async (t) => {
    const { up, proxy } = await setup(t, (req, res, body) => {
        jsonResult(res, body, {}, {
            'Mcp-Session-Id': 'sess-from-upstream',
            'MCP-Protocol-Version': '2025-06-18',
            'X-Upstream-Custom': 'kept',
            'Connection': 'X-Bar',
            'X-Bar': 'hop-by-hop',
            'Keep-Alive': 'timeout=77',
            'Proxy-Authenticate': 'Basic realm="upstream"',
        });
    });
    const res = await request(proxy.url, {
        method: 'POST',
        headers: [
            ...POST_HEADERS,
            ['Authorization', 'Bearer tok-123'],
            ['Mcp-Session-Id', 'sess-42'],
            ['MCP-Protocol-Version', '2025-06-18'],
            ['Last-Event-ID', 'ev-9'],
            ['X-Client-Custom', 'kept'],
            ['Connection', 'keep-alive, X-Foo'],
            ['X-Foo', 'hop-by-hop'],
            ['Keep-Alive', 'timeout=99'],
            ['Proxy-Authorization', 'Basic c2VjcmV0'],
            ['TE', 'trailers'],
        ],
        body: rpcBody(13),
    });
    assert.equal(res.status, 200);
    const h = up.requests[0].headers;
    assert.equal(h.authorization, 'Bearer tok-123');
    assert.equal(h['mcp-session-id'], 'sess-42');
    assert.equal(h['mcp-protocol-version'], '2025-06-18');
    assert.equal(h['last-event-id'], 'ev-9');
    assert.equal(h['x-client-custom'], 'kept');
    assert.equal(h['content-type'], 'application/json');
    assert.equal(h.accept, 'application/json, text/event-stream');
    if (!DIRECT) {
        assert.match(h['x-forwarded-for'] || '', /(^|,\s*)127\.0\.0\.1$/, `X-Forwarded-For: ${h['x-forwarded-for']}`);
        assert.equal(h['x-foo'], undefined, 'X-Foo was named in Connection: hop-by-hop, must be dropped');
        assert.notEqual(h['keep-alive'], 'timeout=99', 'Keep-Alive is hop-by-hop');
        assert.equal(h['proxy-authorization'], undefined, 'Proxy-Authorization is hop-by-hop');
        assert.doesNotMatch(h.connection || '', /x-foo/i, 'Connection header forwarded as is');
        assert.equal(h.te, undefined, 'TE is hop-by-hop');
        assert.equal(res.headers['x-bar'], undefined, 'X-Bar was named in Connection: must be dropped');
        assert.notEqual(res.headers['keep-alive'], 'timeout=77', 'upstream Keep-Alive relayed');
        assert.equal(res.headers['proxy-authenticate'], undefined, 'Proxy-Authenticate is hop-by-hop');
        assert.doesNotMatch(res.headers.connection || '', /x-bar/i, 'upstream Connection header relayed');
    }
    assert.equal(res.headers['mcp-session-id'], 'sess-from-upstream');
    assert.equal(res.headers['mcp-protocol-version'], '2025-06-18');
    assert.equal(res.headers['x-upstream-custom'], 'kept');
    assert.match(res.headers['content-type'], /^application\/json/);
    const [l] = await proxy.expectLogCount(DIRECT ? 0 : 1);
    if (DIRECT) return;
    expectFields(l, { mcp_session_id: 'sess-42', mcp_protocol_version: '2025-06-18', response: 'json' });
});

test('request_bodies_are_forwarded_byte_for_byte_even_invalid_json', async (t) => {
    const answer = '{"jsonrpc":"2.0","id":null,"result":{}}';
    const { up, proxy } = await setup(t, (req, res) => {
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end(answer);
    });
    const bodies = [
        // key order, spacing, escapes and a trailing newline a re-serialiser would change
        Buffer.from('{ "params" : {"name":"echo","arguments":{"message":"caf\\u00e9 \\/ ✓ 1e3"}},\n' +
            '  "method":"tools/call", "id":1.0, "jsonrpc":"2.0" }\n'),
        Buffer.from('{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"x"'), // truncated
        Buffer.from('[{"jsonrpc":"2.0","id":3,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/initialized"}]'),
        Buffer.concat([Buffer.from('{"jsonrpc":"2.0","id":4,"method":"ping","params":{"b":"'),
            Buffer.from([0xc3, 0x28, 0xff]), Buffer.from('"}}')]), // invalid UTF-8
    ];
    for (const body of bodies) {
        const res = await request(proxy.url, { method: 'POST', headers: POST_HEADERS, body });
        assert.equal(res.status, 200);
        assert.equal(res.text(), answer, 'the upstream answer reached the client unchanged');
    }
    assert.equal(up.requests.length, bodies.length);
    for (const [i, body] of bodies.entries()) {
        assert.ok(up.requests[i].body.equals(body),
            `body ${i} changed on the way:\n sent ${body.toString('hex')}\n got  ${up.requests[i].body.toString('hex')}`);
    }
    if (DIRECT) return;
    const lines = await proxy.expectLogCount(bodies.length);
    expectFields(lines[0], { rpc_method: 'tools/call', tool: 'echo', bytes_in: bodies[0].length });
    assert.ok(!lines[0].rpc_parse_error, `valid JSON logged with a parse error: ${JSON.stringify(lines[0])}`);
    assert.ok(lines[1].rpc_parse_error, `invalid JSON must be logged with rpc_parse_error: ${JSON.stringify(lines[1])}`);
    assert.equal(lines[2].batch, 2, `batch size: ${JSON.stringify(lines[2])}`);
    assert.equal(lines[2].rpc_method, 'ping', 'a batch is named by its first request');
    for (const l of lines) expectFields(l, { status: 200 });
});

test('body_over_max_body_size_gets_413_with_a_jsonrpc_error', async (t) => {
    if (DIRECT) return t.skip('mcpeek-only behaviour');
    const { up, proxy } = await setup(t, (req, res, body) => jsonResult(res, body), { args: ['--max-body-size', '1k'] });
    const small = rpcBody(98, 'tools/call', { name: 'echo', arguments: { message: 'x'.repeat(800) } });
    assert.ok(small.length < 1000);
    const ok = await request(proxy.url, { method: 'POST', headers: POST_HEADERS, body: small });
    assert.equal(ok.status, 200, 'a body under the limit passes');

    const big = rpcBody(99, 'tools/call', { name: 'echo', arguments: { message: 'x'.repeat(2000) } });
    const res = await request(proxy.url, { method: 'POST', headers: POST_HEADERS, body: big });
    assert.equal(res.status, 413, `status ${res.status}: ${res.text()}`);
    let err;
    assert.doesNotThrow(() => { err = res.json(); }, `413 body is JSON: ${res.text()}`);
    assert.equal(err.jsonrpc, '2.0', `413 body: ${res.text()}`);
    assert.ok(err.id === 99 || err.id === null, `413 id is the request's or null: ${res.text()}`);
    assert.equal(typeof err.error?.code, 'number', `413 error.code: ${res.text()}`);
    assert.equal(up.requests.length, 1, 'the oversized body never reached the upstream');
    const lines = await proxy.expectLogCount(2);
    expectFields(lines[1], { status: 413 });
    assert.equal(lines[1].error, 'body_too_large', `log line: ${JSON.stringify(lines[1])}`);
});

test('upstream_connection_is_kept_alive_across_sequential_requests', async (t) => {
    const { up, proxy } = await setup(t, (req, res, body) => jsonResult(res, body, { ok: true }));
    // First five over one kept-alive client connection (as the SDK's fetch does), then five on
    // a new client connection each (Connection: close): upstream reuse is mcpeek's own pool.
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    t.after(() => agent.destroy());
    const clientSockets = new Set();
    for (let i = 0; i < 10; i++) {
        const res = await request(proxy.url, {
            method: 'POST', headers: POST_HEADERS, body: rpcBody(100 + i, 'ping', {}), agent: i < 5 ? agent : false,
            onSocket: (s) => clientSockets.add(s),
        }).catch((e) => { throw new Error(`request ${i} (${i < 5 ? 'kept-alive' : 'Connection: close'}): ${e.message}`); });
        assert.equal(res.status, 200, `request ${i}: status ${res.status}`);
        assert.equal(res.json().id, 100 + i);
    }
    assert.equal(clientSockets.size, 6, 'the client used one kept-alive connection, then five fresh ones');
    if (DIRECT) return;
    assert.equal(up.connections, 1, `10 sequential requests used ${up.connections} upstream connections`);
    const lines = await proxy.expectLogCount(10);
    assert.deepEqual(lines.map((l) => l.rpc_id), [...Array(10).keys()].map((i) => 100 + i),
        `one line per request, in order:\n${fmtLines(lines)}`);
});
