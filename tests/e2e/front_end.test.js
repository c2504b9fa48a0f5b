// mcpeek's own HTTP/1.1 front end (src/client.c, src/server.c, src/http1.c) on raw sockets:
// hang-ups noticed before the upstream answers, Expect: 100-continue, idle keep-alive closes,
// header syntax and field-count limits, HTTP/1.0 keep-alive, pipelining with a chunked upload,
// a client that stops reading, HEAD, and the query string on the way upstream. Every test
// checks what the client got and the access log: one line per exchange, none for a connection
// that only idled. All mcpeek-only: skipped with MCPEEK_E2E_DIRECT=1.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { performance } from 'node:perf_hooks';
import test from 'node:test';
import {
    DIRECT, expectFields, fmtLines, POST_HEADERS, request, sleep, startMcpeek, TIME_SCALE,
} from './lib/harness.js';
import {
    assertFdsSettle, assertServes, fdBaseline, hostileUpstream, rawConnect, rawPost, rpc,
} from './lib/hostile.js';
import { jsonResult } from './lib/scripted-upstream.js';

const only = DIRECT ? { skip: 'mcpeek-only behaviour (MCPEEK_E2E_DIRECT=1)' } : {};

async function setup(t, handler, args = []) {
    const up = await hostileUpstream(t, handler);
    const proxy = await startMcpeek(t, up.url, { args });
    return { up, proxy };
}

// A raw connection destroyed at teardown, also when the test failed half-way.
async function connect(t, proxy) {
    const c = await rawConnect(proxy.port);
    t.after(() => c.sock.destroy());
    return c;
}

async function waitUntil(pred, timeoutMs) {
    const deadline = performance.now() + timeoutMs * TIME_SCALE;
    while (!pred()) {
        if (performance.now() > deadline) return false;
        await sleep(10);
    }
    return true;
}

// Splits a byte stream into HTTP/1.1 responses. `noBody` lists, in order, which responses
// answer a HEAD (no body whatever the headers say). Interim 1xx responses are returned too.
// Returns { responses, rest } with the complete responses and the bytes after them.
function splitResponses(buf, noBody = []) {
    const responses = [];
    let finals = 0;
    for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) break;
        const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
        const m = lines[0].match(/^HTTP\/1\.[01] (\d{3})/);
        assert.ok(m, `not an HTTP response: ${JSON.stringify(buf.toString('latin1'))}`);
        const status = Number(m[1]);
        const headers = {};
        for (const line of lines.slice(1)) {
            const i = line.indexOf(':');
            headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
        }
        let rest = buf.subarray(end + 4);
        let body = Buffer.alloc(0);
        if (status >= 200 && !noBody[finals]) {
            if (headers['content-length'] !== undefined) {
                const n = Number(headers['content-length']);
                if (rest.length < n) break;
                body = rest.subarray(0, n);
                rest = rest.subarray(n);
            } else if (/chunked/i.test(headers['transfer-encoding'] || '')) {
                const parts = [];
                let done = false;
                for (;;) {
                    const nl = rest.indexOf('\r\n');
                    if (nl < 0) break;
                    const n = parseInt(rest.subarray(0, nl).toString('latin1'), 16);
                    if (rest.length < nl + 2 + n + 2) break;
                    if (n === 0) { rest = rest.subarray(nl + 4); done = true; break; }
                    parts.push(rest.subarray(nl + 2, nl + 2 + n));
                    rest = rest.subarray(nl + 2 + n + 2);
                }
                if (!done) break;
                body = Buffer.concat(parts);
            } else {
                break; // delimited by the close: not used here
            }
        }
        responses.push({ status, headers, head: lines, body, json: () => JSON.parse(body.toString('utf8')) });
        if (status >= 200) finals += 1;
        buf = rest;
    }
    return { responses, rest: buf };
}

// Waits until the connection has delivered `n` final responses; returns all parsed responses.
async function finalResponses(c, n, { noBody = [], timeoutMs = 5000, what = 'responses' } = {}) {
    let parsed = { responses: [], rest: Buffer.alloc(0) };
    const count = () => parsed.responses.filter((r) => r.status >= 200).length;
    await waitUntil(() => {
        parsed = splitResponses(c.got(), noBody);
        return count() >= n || c.isClosed();
    }, timeoutMs);
    parsed = splitResponses(c.got(), noBody);
    assert.equal(count(), n, `${what}: expected ${n} final responses, got ${count()} ` +
        `(closed: ${c.isClosed()}): ${JSON.stringify(c.got().toString('latin1'))}`);
    return parsed;
}

// The JSON-RPC error mcpeek itself answers a refused request with.
function assertRefusal(r, status, what) {
    assert.equal(r.status, status, `${what}: expected ${status}, got ${r.status}: ${r.body}`);
    assert.match(r.headers['content-type'] || '', /^application\/json/, `${what}: content-type`);
    assert.equal(r.headers.connection, 'close', `${what}: a refusal closes the connection`);
    const b = r.json();
    assert.equal(b.jsonrpc, '2.0', `${what}: ${r.body}`);
    assert.equal(b.id, null, `${what}: ${r.body}`);
    assert.equal(b.error?.code, -32600, `${what}: ${r.body}`);
}

// The one log line matching pred (waits for it; fails if there are several).
async function lineWhere(proxy, pred, what) {
    await proxy.waitForLogs(1, pred);
    const found = proxy.logs().filter(pred);
    assert.equal(found.length, 1, `${what}: expected one matching log line, got ${found.length}:\n${fmtLines(proxy.logs())}`);
    return found[0];
}

const chunked = (parts) => parts.map((p) => `${Buffer.byteLength(p).toString(16)}\r\n${p}\r\n`).join('') + '0\r\n\r\n';

// ---- hang-ups -------------------------------------------------------------------------------

test('client_hanging_up_before_the_upstream_answers_closes_the_upstream_request_and_logs_client_aborted', only, async (t) => {
    // evhttp only noticed a hang-up when it first wrote to the client; the front end keeps
    // the socket registered for reading during the exchange and sees the EOF at once.
    let upstreamClosedAt = null;
    const timers = [];
    t.after(() => timers.forEach(clearTimeout));
    const { up, proxy } = await setup(t, (req, res, body) => {
        res.on('close', () => { upstreamClosedAt = performance.now(); });
        timers.push(setTimeout(() => { if (!res.destroyed) jsonResult(res, body, { late: true }); }, 3000));
    });
    const base = await fdBaseline(proxy);
    const c = await connect(t, proxy);
    c.sock.write(rawPost(proxy.port, rpc('held')));
    assert.ok(await waitUntil(() => up.hits().length === 1, 2000), 'the request never reached the upstream');
    await sleep(100);
    const hungUpAt = performance.now();
    c.sock.destroy();
    await waitUntil(() => upstreamClosedAt !== null, 2500);
    assert.ok(upstreamClosedAt !== null, 'the upstream request was still open 2.5 s after the client hung up');
    const lag = upstreamClosedAt - hungUpAt;
    t.diagnostic(`upstream request closed ${Math.round(lag)} ms after the client hung up`);
    assert.ok(lag < 1000 * TIME_SCALE, `upstream request closed ${Math.round(lag)} ms after the hang-up (want < 1 s)`);
    const l = await lineWhere(proxy, (x) => x.rpc_id === 'held', 'hang-up');
    expectFields(l, { status: 0, error: 'client_aborted', level: 'warn', http_method: 'POST', path: '/mcp' });
    assert.equal(l.response, undefined, `no response started: ${JSON.stringify(l)}`);
    await assertServes(proxy);
    await assertFdsSettle(proxy, base, 'after the hang-up');
    await proxy.expectLogCount(3);
});

// ---- request reading ------------------------------------------------------------------------

test('expect_100_continue_upload_gets_100_continue_then_the_final_answer_and_the_body_reaches_the_upstream', only, async (t) => {
    const { up, proxy } = await setup(t);
    const body = rpc('expect-1', 'tools/call', { name: 'echo', arguments: { message: 'e'.repeat(3000) } });
    const c = await connect(t, proxy);
    const head = `POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:${proxy.port}\r\nContent-Type: application/json\r\n` +
        `Accept: application/json, text/event-stream\r\nExpect: 100-continue\r\nContent-Length: ${body.length}\r\n\r\n`;
    c.sock.write(head);
    const cont = 'HTTP/1.1 100 Continue\r\n\r\n';
    await waitUntil(() => c.got().length >= cont.length || c.isClosed(), 3000);
    assert.equal(c.got().toString('latin1'), cont, 'the head with Expect: 100-continue was not answered with 100 Continue alone');
    assert.equal(up.hits().length, 0, 'the request went upstream before its body came');
    c.sock.write(body);
    const { responses } = await finalResponses(c, 1, { what: 'after the body' });
    assert.equal(responses.length, 2, `100 then the answer: ${responses.map((r) => r.status)}`);
    assert.equal(responses[0].status, 100);
    assert.equal(responses[1].status, 200, `final answer: ${responses[1].body}`);
    assert.equal(responses[1].json().id, 'expect-1');
    assert.equal(up.hits().length, 1);
    assert.equal(up.hits()[0].body.toString('utf8'), body, 'the upstream got another body');
    assert.equal(up.hits()[0].headers.expect, undefined, 'Expect is hop-by-hop for mcpeek: not forwarded');
    const l = (await proxy.expectLogCount(1))[0];
    expectFields(l, { rpc_id: 'expect-1', status: 200, bytes_in: body.length, level: 'info' });
    assert.equal(l.error, undefined);
});

test('idle_keep_alive_connection_is_closed_silently_after_client_header_timeout', only, async (t) => {
    const { proxy } = await setup(t, undefined, ['--client-header-timeout', '1s']);
    const c = await connect(t, proxy);
    c.sock.write(rawPost(proxy.port, rpc('before-idle', 'ping', {})));
    const { responses } = await finalResponses(c, 1);
    assert.equal(responses[0].status, 200);
    assert.equal(responses[0].json().id, 'before-idle');
    const answeredAt = Date.now(); // rawConnect stamps closedAt with Date.now()
    const afterAnswer = c.got().length;
    // A connection that never sends a byte is closed the same way.
    const silent = await connect(t, proxy);
    const openedAt = Date.now();
    await waitUntil(() => c.isClosed() && silent.isClosed(), 4000);
    assert.ok(c.isClosed(), 'the idle keep-alive connection was still open 4 s after its answer (timeout 1 s)');
    assert.ok(silent.isClosed(), 'a connection that never sent a byte was still open after 4 s (timeout 1 s)');
    const idle = c.state.closedAt - answeredAt;
    const silentIdle = silent.state.closedAt - openedAt;
    t.diagnostic(`idle keep-alive closed after ${Math.round(idle)} ms, silent connection after ${Math.round(silentIdle)} ms`);
    assert.ok(idle >= 500, `idle connection closed after ${Math.round(idle)} ms, before client_header_timeout (1 s)`);
    assert.ok(silentIdle >= 500, `silent connection closed after ${Math.round(silentIdle)} ms`);
    assert.equal(c.got().length, afterAnswer, `bytes after the answer on an idle close: ${c.got().subarray(afterAnswer)}`);
    assert.equal(silent.got().length, 0, `a silent connection got ${silent.got()}`);
    await proxy.expectLogCount(1); // no 408 or other line for the idle closes
    await assertServes(proxy, 'a fresh connection after the idle closes');
    await proxy.expectLogCount(2);
});

test('obs_fold_and_whitespace_before_colon_get_400_and_101_fields_get_431_and_none_reaches_the_upstream', only, async (t) => {
    const { up, proxy } = await setup(t);
    const body = rpc('hdr');
    const post = (fields) => `POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n` +
        `${fields.map((f) => `${f}\r\n`).join('')}Content-Length: ${body.length}\r\n\r\n${body}`;
    // 1 + 1 + 98 + 1 = 101 fields; the same head with one field less must pass.
    const padding = (n) => Array.from({ length: n }, (_, i) => `X-Pad-${i}: v`);
    const cases = [
        ['obs-fold', post(['X-Folded: a', ' continued']), 400, 'bad_request'],
        ['obs-fold with a tab', post(['X-Folded: a', '\tcontinued']), 400, 'bad_request'],
        ['space before colon', post(['X-Spaced : a']), 400, 'bad_request'],
        ['101 fields', post(padding(98)), 431, 'headers_too_large'],
    ];
    for (const [i, [what, raw, status, error]] of cases.entries()) {
        const c = await connect(t, proxy);
        c.sock.write(raw);
        const { responses } = await finalResponses(c, 1, { what });
        assertRefusal(responses[0], status, what);
        assert.ok(await waitUntil(() => c.isClosed(), 3000), `${what}: the connection stayed open after the refusal`);
        const l = (await proxy.expectLogCount(i + 1))[i];
        expectFields(l, { status, error, http_method: 'POST', path: '/mcp', level: 'warn' }, what);
    }
    assert.equal(up.hits().length, 0, `a refused head reached the upstream: ${JSON.stringify(up.hits().map((h) => h.headers))}`);
    const c = await connect(t, proxy);
    c.sock.write(post(padding(97)));
    const { responses } = await finalResponses(c, 1, { what: '100 fields' });
    assert.equal(responses[0].status, 200, `100 header fields (the limit) were refused: ${responses[0].body}`);
    assert.equal(up.hits().length, 1);
    assert.equal(up.hits()[0].headers['x-pad-96'], 'v');
    const lines = await proxy.expectLogCount(cases.length + 1);
    expectFields(lines[cases.length], { rpc_id: 'hdr', status: 200 });
});

// Each request-framing rule of docs/security.md (RFC 9112): refused with 400 and one
// "bad_request" line, nothing reaches the upstream, the connection closes. Then the accepted
// neighbours of the same rules (strict chunk extensions, absolute-form naming the Host) pass.
test('strict_request_framing_refuses_each_ambiguous_form_with_400_and_one_line', only, async (t) => {
    const { up, proxy } = await setup(t);
    const host = `127.0.0.1:${proxy.port}`;
    const body = rpc('frm');
    const head = (line, fields) => `${line}\r\n${fields.map((f) => `${f}\r\n`).join('')}\r\n`;
    const chunked = (framing) => head('POST /mcp HTTP/1.1', [`Host: ${host}`, 'Content-Type: application/json',
        'Transfer-Encoding: chunked']) + framing;
    const len = body.length.toString(16);
    const cases = [
        ['space after the chunk size', chunked(`${len} \r\n${body}\r\n0\r\n\r\n`)],
        ['tab before a chunk extension', chunked(`${len}\t;a=b\r\n${body}\r\n0\r\n\r\n`)],
        ['control byte in the chunk-size line', chunked(`${len}\x0b\r\n${body}\r\n0\r\n\r\n`)],
        ['chunk extension with a space', chunked(`${len};a b\r\n${body}\r\n0\r\n\r\n`)],
        ['chunk extension without a name', chunked(`${len};=b\r\n${body}\r\n0\r\n\r\n`)],
        ['chunk extension with an unterminated quote', chunked(`${len};a="b\r\n${body}\r\n0\r\n\r\n`)],
        ['bare LF after the chunk size', chunked(`${len}\n${body}\r\n0\r\n\r\n`)],
        ['bare LF after the chunk data', chunked(`${len}\r\n${body}\n0\r\n\r\n`)],
        ['bare LF ending the trailers', chunked(`${len}\r\n${body}\r\n0\r\n\n`)],
        ['Transfer-Encoding on HTTP/1.0', head('POST /mcp HTTP/1.0', [`Host: ${host}`, 'Transfer-Encoding: chunked'])
            + `${len}\r\n${body}\r\n0\r\n\r\n`],
        ['HTTP/1.1 without Host', head('POST /mcp HTTP/1.1', ['Content-Type: application/json', `Content-Length: ${body.length}`]) + body],
        ['two Host fields', head('POST /mcp HTTP/1.1', [`Host: ${host}`, `Host: ${host}`, `Content-Length: ${body.length}`]) + body],
        ['absolute-form naming another host', head(`POST http://evil.example.com/mcp HTTP/1.1`, [`Host: ${host}`,
            `Content-Length: ${body.length}`]) + body],
    ];
    for (const [i, [what, raw]] of cases.entries()) {
        const c = await connect(t, proxy);
        c.sock.write(raw);
        const { responses } = await finalResponses(c, 1, { what });
        assertRefusal(responses[0], 400, what);
        assert.ok(await waitUntil(() => c.isClosed(), 3000), `${what}: the connection stayed open after the refusal`);
        const l = (await proxy.expectLogCount(i + 1))[i];
        expectFields(l, { status: 400, error: 'bad_request', http_method: 'POST', level: 'warn' }, what);
    }
    assert.equal(up.hits().length, 0, `a refused request reached the upstream: ${JSON.stringify(up.hits().map((h) => h.headers))}`);
    // The well-formed neighbours pass, with the body intact and the target made origin-form.
    const good = [
        chunked(`${len};a=b;c="d;\\"e";f\r\n${body}\r\n0;last\r\nX-Trailer: 1\r\n\r\n`),
        head(`POST http://${host}/mcp HTTP/1.1`, [`Host: ${host}`, `Content-Length: ${body.length}`]) + body,
    ];
    for (const raw of good) {
        const c = await connect(t, proxy);
        c.sock.write(raw);
        const { responses } = await finalResponses(c, 1, { what: 'well-formed' });
        assert.equal(responses[0].status, 200, responses[0].body);
    }
    assert.equal(up.hits().length, 2);
    for (const h of up.hits()) {
        assert.equal(h.body.toString(), body);
        assert.equal(h.url, '/mcp');
    }
    await proxy.expectLogCount(cases.length + 2);
});

test('http10_request_with_connection_keep_alive_is_answered_keep_alive_and_the_socket_serves_a_second_request', only, async (t) => {
    const { up, proxy } = await setup(t); // the upstream answers with Content-Length
    const c = await connect(t, proxy);
    const h10 = (id) => {
        const b = rpc(id, 'tools/list', {});
        return `POST /mcp HTTP/1.0\r\nConnection: keep-alive\r\nContent-Type: application/json\r\n` +
            `Content-Length: ${b.length}\r\n\r\n${b}`;
    };
    c.sock.write(h10('h10-ka-1'));
    let { responses } = await finalResponses(c, 1, { what: 'first HTTP/1.0 answer' });
    assert.equal(responses[0].status, 200);
    assert.equal(responses[0].json().id, 'h10-ka-1');
    assert.match(responses[0].headers.connection || '', /^keep-alive$/i, `HTTP/1.0 keep-alive answer: ${responses[0].head.join(' | ')}`);
    assert.ok(responses[0].headers['content-length'], 'a keep-alive answer to HTTP/1.0 needs Content-Length');
    await sleep(200 * TIME_SCALE);
    assert.ok(!c.isClosed(), 'the HTTP/1.0 keep-alive connection was closed after the first answer');
    c.sock.write(h10('h10-ka-2'));
    ({ responses } = await finalResponses(c, 2, { what: 'second request on the same socket' }));
    assert.equal(responses[1].status, 200);
    assert.equal(responses[1].json().id, 'h10-ka-2');
    assert.equal(up.hits().length, 2);
    const lines = await proxy.expectLogCount(2);
    assert.deepEqual(lines.map((l) => [l.rpc_id, l.status, l.error]), [['h10-ka-1', 200, undefined], ['h10-ka-2', 200, undefined]]);
});

// Three requests, the middle one a chunked upload with odd chunk sizes and an extension.
function pipelinedTriple(port) {
    const bodies = [
        rpc('pipe-a', 'tools/call', { name: 'a', arguments: { s: 'A'.repeat(100) } }),
        rpc('pipe-b', 'tools/call', { name: 'b', arguments: { s: 'B'.repeat(2000) } }),
        rpc('pipe-c', 'tools/call', { name: 'c', arguments: { s: 'C'.repeat(50) } }),
    ];
    // Odd chunk sizes (1, 7, 31, 3, 13, ..., the rest), one with an extension.
    const sizes = [1, 7, 31, 3, 13, 255, 1, 17];
    const parts = [];
    let off = 0;
    for (const n of sizes) { parts.push(bodies[1].slice(off, off + n)); off += n; }
    parts.push(bodies[1].slice(off));
    const chunks = chunked(parts).replace(/^1f\r\n/m, '1f;name=value\r\n');
    assert.ok(chunks.includes('1f;name=value\r\n'));
    const wire = Buffer.concat([
        rawPost(port, bodies[0]),
        Buffer.from(`POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n` +
            `Transfer-Encoding: chunked\r\n\r\n${chunks}`),
        rawPost(port, bodies[2]),
    ]);
    return { bodies, wire };
}

async function assertPipelinedTriple(c, up, proxy, bodies) {
    const { responses } = await finalResponses(c, 3, { timeoutMs: 8000, what: 'pipelined answers' });
    assert.deepEqual(responses.map((r) => [r.status, r.json().id, r.json().result.len]),
        bodies.map((b, i) => [200, `pipe-${'abc'[i]}`, b.length]), 'answers in request order, each with its body length');
    assert.deepEqual(up.hits().map((h) => h.body.toString('utf8')), bodies, 'bodies at the upstream');
    assert.equal(up.hits()[1].headers['transfer-encoding'], undefined, 'the decoded upload goes upstream with a Content-Length');
    assert.equal(up.hits()[1].headers['content-length'], String(bodies[1].length));
    assert.ok(!c.isClosed(), 'the connection was closed after the pipelined answers');
    const lines = await proxy.expectLogCount(3);
    assert.deepEqual(lines.map((l) => [l.rpc_id, l.status, l.bytes_in, l.error]),
        bodies.map((b, i) => [`pipe-${'abc'[i]}`, 200, b.length, undefined]));
}

test('pipelined_requests_with_a_chunked_upload_in_the_middle_are_answered_in_order_with_bodies_intact', only, async (t) => {
    const { up, proxy } = await setup(t, (req, res, body) => jsonResult(res, body, { len: body.length }));
    const { bodies, wire } = pipelinedTriple(proxy.port);
    const c = await connect(t, proxy);
    c.sock.write(wire);
    await assertPipelinedTriple(c, up, proxy, bodies);
});

test('pipelined_requests_trickled_in_odd_pieces_are_read_the_same_as_in_one_write', only, async (t) => {
    // Heads, chunk-size lines and payloads cut at every possible place across reads.
    const { up, proxy } = await setup(t, (req, res, body) => jsonResult(res, body, { len: body.length }));
    const { bodies, wire } = pipelinedTriple(proxy.port);
    const c = await connect(t, proxy);
    c.sock.setNoDelay(true);
    const pieces = [1, 2, 3, 5, 7, 11, 13, 17];
    for (let off = 0, k = 0; off < wire.length; k++) {
        const n = pieces[k % pieces.length];
        c.sock.write(wire.subarray(off, off + n));
        off += n;
        if (k % 4 === 3) await sleep(2);
    }
    await assertPipelinedTriple(c, up, proxy, bodies);
});

test('chunked_upload_in_one_byte_chunks_within_max_body_size_is_served', only, async (t) => {
    // Chunk framing can be five times the payload: it must not count against max_body_size.
    const { up, proxy } = await setup(t, undefined, ['--max-body-size', '8k', '--client-body-timeout', '3s']);
    const body = rpc('tiny-chunks', 'tools/call', { name: 'echo', arguments: { message: 't'.repeat(8000) } });
    assert.ok(body.length < 8192);
    const c = await connect(t, proxy);
    c.sock.write(`POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n` +
        `Transfer-Encoding: chunked\r\n\r\n${chunked(body.split(''))}`);
    const { responses } = await finalResponses(c, 1, { timeoutMs: 6000, what: 'upload in 1-byte chunks' });
    assert.equal(responses[0].status, 200, `upload of ${body.length} bytes in 1-byte chunks: ${responses[0].body}`);
    assert.equal(up.hits().length, 1);
    assert.equal(up.hits()[0].body.toString('utf8'), body);
    const l = (await proxy.expectLogCount(1))[0];
    expectFields(l, { rpc_id: 'tiny-chunks', status: 200, bytes_in: body.length });
    assert.equal(l.error, undefined);
});

// ---- responses -------------------------------------------------------------------------------

test('client_that_stops_reading_a_large_sse_answer_is_cut_after_client_send_timeout', only, async (t) => {
    let upstreamClosedAt = null;
    let written = 0;
    const event = `event: message\ndata: ${JSON.stringify({ jsonrpc: '2.0', method: 'notifications/message', params: { pad: 'p'.repeat(16000) } })}\n\n`;
    const { proxy } = await setup(t, (req, res) => {
        res.writeHead(200, { 'Content-Type': 'text/event-stream' });
        res.on('close', () => { upstreamClosedAt = performance.now(); });
        const pump = () => {
            while (!res.destroyed && res.write(event)) written += event.length;
            if (!res.destroyed) res.once('drain', pump);
        };
        pump();
    }, ['--client-send-timeout', '1s']);
    const base = await fdBaseline(proxy);
    const c = await connect(t, proxy);
    c.sock.write(rawPost(proxy.port, rpc('stalled-reader')));
    assert.ok(await waitUntil(() => c.got().length > 0, 3000), 'no answer started');
    c.sock.pause(); // stop reading: the kernel buffers fill, then mcpeek's
    const pausedAt = performance.now();
    const received = c.got().length;
    await waitUntil(() => upstreamClosedAt !== null, 8000);
    assert.ok(upstreamClosedAt !== null, `the upstream request was still open 8 s after the client stopped reading ` +
        `(client_send_timeout 1 s; upstream wrote ${written} bytes)`);
    const lag = upstreamClosedAt - pausedAt;
    t.diagnostic(`client paused after ${received} bytes; upstream wrote ${written} bytes; upstream request closed after ${Math.round(lag)} ms`);
    assert.ok(lag >= 700, `the stream was cut ${Math.round(lag)} ms after the client paused, before client_send_timeout (1 s)`);
    const l = await lineWhere(proxy, (x) => x.rpc_id === 'stalled-reader', 'stalled reader');
    expectFields(l, { status: 200, response: 'sse', error: 'client_aborted', level: 'warn' });
    assert.ok(l.bytes_out > received, `bytes_out ${l.bytes_out} vs ${received} received before the pause`);
    await assertFdsSettle(proxy, base, 'after the stalled reader was cut');
    c.sock.resume(); // the client then sees the connection end
    assert.ok(await waitUntil(() => c.isClosed(), 5000), 'the cut connection never ended for the client');
    await assertServes(proxy);
    await proxy.expectLogCount(3);
});

test('head_request_is_relayed_with_the_upstream_content_length_no_body_and_a_reusable_connection', only, async (t) => {
    const { up, proxy } = await setup(t, (req, res, body) => {
        if (req.method === 'HEAD') {
            res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': '1234' });
            res.end();
        } else {
            jsonResult(res, body, { ok: true });
        }
    });
    const c = await connect(t, proxy);
    c.sock.write(`HEAD /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n\r\n`);
    let { responses, rest } = await finalResponses(c, 1, { noBody: [true], what: 'HEAD' });
    assert.equal(responses[0].status, 200);
    assert.equal(responses[0].headers['content-length'], '1234', `HEAD answer: ${responses[0].head.join(' | ')}`);
    assert.equal(responses[0].headers['transfer-encoding'], undefined);
    await sleep(300 * TIME_SCALE);
    ({ rest } = splitResponses(c.got(), [true]));
    assert.equal(rest.length, 0, `body bytes after a HEAD answer: ${JSON.stringify(rest.toString('latin1'))}`);
    assert.ok(!c.isClosed(), 'the connection was closed after the HEAD answer');
    c.sock.write(rawPost(proxy.port, rpc('after-head')));
    ({ responses } = await finalResponses(c, 2, { noBody: [true], what: 'POST after HEAD' }));
    assert.equal(responses[1].status, 200);
    assert.equal(responses[1].json().id, 'after-head');
    assert.deepEqual(up.hits().map((h) => h.method), ['HEAD', 'POST']);
    const lines = await proxy.expectLogCount(2);
    expectFields(lines[0], { http_method: 'HEAD', status: 200, response: 'empty', bytes_out: 0 });
    assert.equal(lines[0].error, undefined);
    expectFields(lines[1], { rpc_id: 'after-head', status: 200 });
});

// ---- upstream target ---------------------------------------------------------------------------

test('query_string_on_the_mcp_path_reaches_the_upstream_url_path_with_the_query', only, async (t) => {
    const up = await hostileUpstream(t);
    // The upstream URL has a path other than /mcp and a query of its own.
    const proxy = await startMcpeek(t, `${up.origin}/up/rpc?tenant=t1`, { args: ['--mcp-path', '/mcp'] });
    const cases = [
        ['/mcp?session=s1&x=y%20z', '/up/rpc?tenant=t1&session=s1&x=y%20z'],
        ['/mcp', '/up/rpc?tenant=t1'],
        ['/other/path?q=1', '/other/path?q=1'], // not the MCP path: sent as it came
    ];
    for (const [i, [target, want]] of cases.entries()) {
        const res = await request(`${proxy.origin}${target}`, { method: 'POST', headers: POST_HEADERS, body: rpc(`q-${i}`) });
        assert.equal(res.status, 200, `${target}: ${res.status} ${res.text()}`);
        assert.equal(up.hits()[i]?.url, want, `${target} reached the upstream as ${up.hits()[i]?.url}`);
    }
    const lines = await proxy.expectLogCount(cases.length);
    assert.deepEqual(lines.map((l) => [l.rpc_id, l.path, l.status]),
        [['q-0', '/mcp', 200], ['q-1', '/mcp', 200], ['q-2', '/other/path', 200]]);
    const text = fs.readFileSync(proxy.logFile, 'utf8');
    assert.ok(!/session=s1|q=1|tenant/.test(text), `a query string reached the log:\n${text}`);
});
