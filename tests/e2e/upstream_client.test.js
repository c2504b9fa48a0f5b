// mcpeek's upstream side (libcurl's multi interface, src/upstream.c, and the relay in proxy.c)
// against upstreams that write exactly the bytes a test wants: a raw TCP server parses each
// request itself and answers with keep-alive, chunked coding in odd pieces, interim 1xx
// answers, close-delimited bodies, garbage, oversized heads, extra bytes, or closes the
// connection under the pool's feet. Each test checks what the client got, how many upstream
// connections were used, and that every exchange wrote exactly one log line.

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import dns from 'node:dns/promises';
import http from 'node:http';
import net from 'node:net';
import test from 'node:test';
import {
    DIRECT, expectFields, freePort, POST_HEADERS, request, sleep, startMcpeek, TIME_SCALE,
} from './lib/harness.js';
import { runMcpeek } from './lib/ops.js';
import { jsonResult, startScriptedUpstream } from './lib/scripted-upstream.js';

// Most scenarios need mcpeek between client and upstream (connection counts, log lines).
const only = { skip: DIRECT ? 'needs mcpeek (MCPEEK_E2E_DIRECT=1)' : false };

const rpcBody = (id, method = 'tools/call') => JSON.stringify({
    jsonrpc: '2.0', id, method, params: { name: 'probe', arguments: {} },
});
const rpcAnswer = (id, result = {}) => JSON.stringify({ jsonrpc: '2.0', id, result });
const sha256 = (buf) => createHash('sha256').update(buf).digest('hex');

// A raw TCP upstream on 127.0.0.1 (or `host`): splits what arrives into requests (head + Content-Length
// body) and calls onRequest(sock, req) for each, req = { connId, index (on its connection),
// method, url, head, body, id (the JSON-RPC id, if any) }. Counts connections; destroys every
// socket and closes the server at teardown.
async function startRawUpstream(t, onRequest, { host = '127.0.0.1' } = {}) {
    const state = { connections: 0, requests: [], sockets: new Set() };
    const server = net.createServer((sock) => {
        const connId = ++state.connections;
        state.sockets.add(sock);
        sock.setNoDelay(true);
        sock.on('close', () => state.sockets.delete(sock));
        sock.on('error', () => {});
        let buf = Buffer.alloc(0);
        let index = 0;
        sock.on('data', (d) => {
            buf = Buffer.concat([buf, d]);
            while (!sock.destroyed) {
                const end = buf.indexOf('\r\n\r\n');
                if (end < 0) return;
                const head = buf.subarray(0, end).toString('latin1');
                const m = /\r\ncontent-length:[ \t]*(\d+)/i.exec(head);
                const len = m ? Number(m[1]) : 0;
                if (buf.length < end + 4 + len) return;
                const body = buf.subarray(end + 4, end + 4 + len);
                buf = buf.subarray(end + 4 + len);
                const [method, url] = head.split(' ');
                let id;
                try { id = JSON.parse(body.toString('utf8')).id; } catch { /* not JSON-RPC */ }
                const req = { connId, index: index++, method, url, head, body, id };
                state.requests.push(req);
                onRequest(sock, req);
            }
        });
    });
    await new Promise((resolve, reject) => server.once('error', reject).listen(0, host, resolve));
    t.after(() => new Promise((resolve) => {
        for (const s of state.sockets) s.destroy();
        server.close(() => resolve());
    }));
    const { port } = server.address();
    return {
        port, url: `http://${host.includes(':') ? `[${host}]` : host}:${port}/mcp`,
        get connections() { return state.connections; },
        get requests() { return state.requests; },
    };
}

// A complete keep-alive JSON answer to req.
function jsonResponse(req, extraHeaders = '', result = {}) {
    const body = rpcAnswer(req.id ?? null, result);
    return `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
        `${extraHeaders}\r\n${body}`;
}

// Writes `pieces` (strings or Buffers) one by one with a pause between them, so they reach
// mcpeek as separate reads. Resolves when all are written (or the socket went away).
async function writeSlowly(sock, pieces, gapMs = 2) {
    for (const p of pieces) {
        if (sock.destroyed) return;
        sock.write(p);
        await sleep(gapMs);
    }
}

// One request over a fresh raw socket (Connection: close, but not half-closed: mcpeek would
// count that as the client going away); resolves with the response ({ raw, status, head, body })
// once it is complete by its framing (Content-Length, the last chunk, or the close). For
// answers node's http client would refuse (heads over its 16 KiB limit) or to see interim
// responses byte for byte.
function rawExchange(port, { method = 'POST', path = '/mcp', body = '', headers = POST_HEADERS, timeoutMs = 15000 } = {}) {
    return new Promise((resolve, reject) => {
        const sock = net.connect(port, '127.0.0.1');
        let raw = Buffer.alloc(0);
        let done = false;
        const finish = () => {
            if (done) return;
            done = true;
            clearTimeout(timer);
            sock.destroy();
            const end = raw.indexOf('\r\n\r\n');
            const head = end < 0 ? raw.toString('latin1') : raw.subarray(0, end).toString('latin1');
            const m = /^HTTP\/1\.[01] (\d{3})/.exec(head);
            resolve({ raw, head, status: m ? Number(m[1]) : 0, body: end < 0 ? Buffer.alloc(0) : raw.subarray(end + 4) });
        };
        const complete = () => {
            const end = raw.indexOf('\r\n\r\n');
            if (end < 0) return false;
            const head = raw.subarray(0, end).toString('latin1');
            const cl = /\r\ncontent-length:[ \t]*(\d+)/i.exec(head);
            if (cl) return raw.length >= end + 4 + Number(cl[1]);
            if (/\r\ntransfer-encoding:[ \t]*chunked/i.test(head)) return raw.subarray(end + 4).toString('latin1').endsWith('0\r\n\r\n');
            return false; // ends at the close
        };
        const timer = setTimeout(() => {
            done = true;
            sock.destroy();
            reject(new Error(`no complete answer within ${timeoutMs} ms; got ${JSON.stringify(raw.toString('latin1').slice(0, 300))}`));
        }, timeoutMs * TIME_SCALE);
        sock.on('data', (d) => { raw = Buffer.concat([raw, d]); if (complete()) finish(); });
        sock.on('error', () => finish());
        sock.on('close', finish);
        const lines = [`${method} ${path} HTTP/1.1`, `Host: 127.0.0.1:${port}`, 'Connection: close',
            ...headers.map(([k, v]) => `${k}: ${v}`), `Content-Length: ${Buffer.byteLength(body)}`];
        sock.write(`${lines.join('\r\n')}\r\n\r\n${body}`);
    });
}

// mcpeek's own 502: a JSON-RPC error carrying the request's id.
function assertRpc502(res, id) {
    const text = res.text();
    assert.equal(res.status, 502, `expected 502, got ${res.status}: ${text}`);
    assert.match(res.headers['content-type'] || '', /^application\/json/, 'content-type of the 502');
    let b;
    assert.doesNotThrow(() => { b = JSON.parse(text); }, `502 body is not JSON: ${text}`);
    assert.equal(b.jsonrpc, '2.0', `502 body: ${text}`);
    assert.deepEqual(b.id, id, `502 id: ${text}`);
    assert.equal(b.error?.code, -32000, `502 error.code: ${text}`);
    assert.equal(typeof b.error?.message, 'string', `502 error.message: ${text}`);
}

async function post(proxy, id, opts = {}) {
    return request(proxy.url, { method: 'POST', headers: POST_HEADERS, body: rpcBody(id), ...opts })
        .catch((e) => { throw new Error(`request ${id}: ${e.message}`); });
}

function assertAnswer(res, id) {
    assert.equal(res.status, 200, `request ${id}: status ${res.status}: ${res.text()}`);
    assert.equal(res.json().id, id, `request ${id}: answer ${res.text()}`);
}

function assertCleanLine(line, id, extra = {}) {
    expectFields(line, { status: 200, rpc_id: id, level: 'info', ...extra }, `log line of request ${id}`);
    assert.equal(line.error, undefined, `request ${id} logged an error: ${JSON.stringify(line)}`);
}

// ---- keep-alive pool ----------------------------------------------------------------------

test('pooled_connection_is_reused_for_sequential_requests', only, async (t) => {
    const up = await startRawUpstream(t, (sock, req) => sock.write(jsonResponse(req)));
    const proxy = await startMcpeek(t, up.url);
    for (let id = 1; id <= 6; id++) assertAnswer(await post(proxy, id), id);
    assert.equal(up.requests.length, 6, 'the upstream saw every request once');
    assert.equal(up.connections, 1,
        `6 sequential requests used ${up.connections} upstream connections (requests on: ${up.requests.map((r) => r.connId)})`);
    assert.deepEqual(up.requests.map((r) => r.index), [0, 1, 2, 3, 4, 5]);
    const lines = await proxy.expectLogCount(6);
    lines.forEach((l, i) => assertCleanLine(l, i + 1, { response: 'json' }));
});

test('upstream_keepalive_0_opens_a_connection_per_request_and_closes_it', only, async (t) => {
    const up = await startRawUpstream(t, (sock, req) => sock.write(jsonResponse(req)));
    const proxy = await startMcpeek(t, up.url, { args: ['--upstream-keepalive', '0'] });
    for (let id = 1; id <= 4; id++) assertAnswer(await post(proxy, id), id);
    assert.equal(up.connections, 4, `4 requests with upstream_keepalive 0 used ${up.connections} connections`);
    const lines = await proxy.expectLogCount(4);
    lines.forEach((l, i) => assertCleanLine(l, i + 1, { response: 'json' }));
});

test('upstream_keepalive_timeout_keeps_an_idle_connection_from_being_reused', only, async (t) => {
    // libcurl reuses a cached connection only while it has been idle for less than the
    // timeout (whole seconds): after it, the next request opens a new one and the old one
    // is closed.
    let closedByProxy = 0;
    const up = await startRawUpstream(t, (sock, req) => {
        if (!sock.watched) {
            sock.watched = true;
            sock.on('end', () => { closedByProxy += 1; });
        }
        sock.write(jsonResponse(req));
    });
    const proxy = await startMcpeek(t, up.url, { args: ['--upstream-keepalive-timeout', '1s'] });
    assertAnswer(await post(proxy, 1), 1);
    assertAnswer(await post(proxy, 2), 2); // at once: reused
    assert.equal(up.connections, 1, `a request right after another used ${up.connections} connections`);
    await sleep(1300);
    assertAnswer(await post(proxy, 3), 3);
    assert.equal(up.connections, 2, `a request after the keep-alive timeout needed a new connection, used ${up.connections}`);
    const deadline = Date.now() + 2000 * TIME_SCALE;
    while (closedByProxy === 0 && Date.now() < deadline) await sleep(50);
    assert.equal(closedByProxy, 1, 'the connection idle past upstream_keepalive_timeout was not closed');
    const lines = await proxy.expectLogCount(3);
    lines.forEach((l, i) => assertCleanLine(l, i + 1, { response: 'json' }));
});

test('upstream_closing_an_idle_keep_alive_connection_is_not_an_error', only, async (t) => {
    // The upstream answers with keep-alive, then drops the connection while it sits in the
    // pool: 100 ms later (an idle timeout), or at once without saying Connection: close.
    const up = await startRawUpstream(t, (sock, req) => {
        sock.write(jsonResponse(req));
        if (req.id === 1) setTimeout(() => sock.destroy(), 100);
        else sock.end();
    });
    const proxy = await startMcpeek(t, up.url);
    assertAnswer(await post(proxy, 1), 1);
    await sleep(400 * TIME_SCALE);
    assertAnswer(await post(proxy, 2), 2); // after a timed-out idle connection
    await sleep(200 * TIME_SCALE);
    assertAnswer(await post(proxy, 3), 3); // after one closed right after its answer
    assertAnswer(await post(proxy, 4), 4); // and immediately again
    assert.equal(up.connections, 4, `each request needed a new connection, used ${up.connections}`);
    assert.equal(up.requests.length, 4, `each request reached the upstream once: ${up.requests.map((r) => r.id)}`);
    const lines = await proxy.expectLogCount(4);
    lines.forEach((l, i) => assertCleanLine(l, i + 1));
});

test('post_on_a_stale_pooled_connection_reaches_the_upstream_exactly_once_and_gets_502', only, async (t) => {
    // The upstream answers the first request of each connection, then reads a second one on
    // the reused connection and closes it without answering: what a server that closed an
    // idle connection at the moment mcpeek reused it looks like, or one that crashed while a
    // tools/call ran. The POST may have acted (sent an e-mail, moved money): libcurl would
    // resend it on a new connection, mcpeek must not. Connection 1 is closed with a FIN,
    // connection 2 with a reset (RST).
    const up = await startRawUpstream(t, (sock, req) => {
        if (req.index === 0) sock.write(jsonResponse(req));
        else if (req.connId === 2) sock.resetAndDestroy();
        else sock.destroy();
    });
    const proxy = await startMcpeek(t, up.url);
    assertAnswer(await post(proxy, 1), 1);
    assertRpc502(await post(proxy, 2), 2);
    assertAnswer(await post(proxy, 3), 3);
    assertRpc502(await post(proxy, 4), 4);
    // (libcurl may open a connection for its resend before mcpeek refuses it: connection ids
    // are not checked, only that no request went out twice.)
    assert.deepEqual(up.requests.map((r) => [r.id, r.index]), [[1, 0], [2, 1], [3, 0], [4, 1]],
        `requests as the upstream saw them ([id, index on its connection]): each exactly once; ${JSON.stringify(up.requests.map((r) => [r.id, r.connId, r.index]))}`);
    const lines = await proxy.expectLogCount(4);
    assertCleanLine(lines[0], 1);
    expectFields(lines[1], { status: 502, rpc_id: 2, error: 'upstream_reset', level: 'warn' }, 'log line of request 2');
    assertCleanLine(lines[2], 3);
    expectFields(lines[3], { status: 502, rpc_id: 4, error: 'upstream_reset', level: 'warn' }, 'log line of request 4');
});

test('get_on_a_stale_pooled_connection_is_retried_once_and_then_gets_502_upstream_reset', only, async (t) => {
    // GET is idempotent: libcurl's resend on a new connection is allowed, once. The upstream
    // answers the first request of connection 1 only; everything else is dropped unanswered.
    const up = await startRawUpstream(t, (sock, req) => {
        if (req.connId === 1 && req.index === 0) sock.write(jsonResponse(req));
        else if (req.connId === 2) sock.write(jsonResponse(req, '', { retried: true }));
        else sock.destroy();
    });
    const proxy = await startMcpeek(t, up.url);
    assertAnswer(await post(proxy, 1), 1);
    const get = await request(proxy.url, { method: 'GET', headers: [['Accept', 'application/json']] });
    assert.equal(get.status, 200, `GET after a stale connection: ${get.status} ${get.text()}`);
    assert.equal(get.json().result?.retried, true, `GET answer: ${get.text()}`);
    assert.deepEqual(up.requests.map((r) => [r.method, r.connId]), [['POST', 1], ['GET', 1], ['GET', 2]],
        'the GET was sent on the pooled connection, then once on a fresh one');
    const lines = await proxy.expectLogCount(2);
    assertCleanLine(lines[0], 1);
    expectFields(lines[1], { status: 200, http_method: 'GET' }, 'log line of the GET');
    assert.equal(lines[1].error, undefined);
});

// ---- framing ----------------------------------------------------------------------------

test('chunked_answer_written_in_odd_pieces_arrives_intact_and_the_connection_is_reused', only, async (t) => {
    const blob = randomBytes(48 * 1024).toString('base64');
    const payload = Buffer.from(rpcAnswer(7, { blob }));
    // Chunks of odd sizes, hex in both cases, extensions on some, a trailer at the end.
    const sizes = [1, 2, 7, 255, 4096, 10, 16384, 3];
    const parts = [];
    let off = 0;
    for (let i = 0; off < payload.length; i++) {
        const n = Math.min(sizes[i % sizes.length], payload.length - off);
        const hex = i % 2 ? n.toString(16).toUpperCase() : n.toString(16);
        const ext = i % 3 === 0 ? `;i=${i};name="q;x"` : '';
        parts.push(Buffer.from(`${hex}${ext}\r\n`), payload.subarray(off, off + n), Buffer.from('\r\n'));
        off += n;
    }
    parts.push(Buffer.from('0;last\r\nX-Checksum: abc\r\nServer-Timing: total;dur=1\r\n\r\n'));
    const wire = Buffer.concat(parts);
    const head = 'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n';
    // The head and the first 400 bytes one byte per write, then pieces of 1, 13, 1000 bytes.
    const pieces = [...Buffer.from(head + wire.subarray(0, 400).toString('latin1'), 'latin1')].map((b) => Buffer.from([b]));
    for (let p = 400, i = 0; p < wire.length; i++) {
        const n = [1, 13, 1000][i % 3];
        pieces.push(wire.subarray(p, p + n));
        p += n;
    }
    const up = await startRawUpstream(t, (sock, req) => {
        if (req.id === 7) writeSlowly(sock, pieces, 0);
        else sock.write(jsonResponse(req));
    });
    const proxy = await startMcpeek(t, up.url);
    const res = await post(proxy, 7, { timeoutMs: 60000 });
    assert.equal(res.status, 200, `status ${res.status}`);
    assert.equal(res.body.length, payload.length, 'payload length through mcpeek');
    assert.equal(sha256(res.body), sha256(payload), 'payload through mcpeek differs from what the upstream sent');
    assertAnswer(await post(proxy, 8), 8);
    assert.equal(up.connections, 1, `the connection was not reused after the chunked answer (${up.connections} connections)`);
    const lines = await proxy.expectLogCount(2);
    assertCleanLine(lines[0], 7, { response: 'json', bytes_out: payload.length });
    assertCleanLine(lines[1], 8);
});

test('interim_100_and_103_answers_are_not_relayed_only_the_final_one_is', only, async (t) => {
    const up = await startRawUpstream(t, async (sock, req) => {
        if (req.id === 1) {
            // All in one write.
            sock.write(`HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n${jsonResponse(req, 'X-Final: yes\r\n')}`);
        } else {
            // Each in its own write, the 103 split inside its head.
            await writeSlowly(sock, ['HTTP/1.1 100 Continue\r\n\r\n', 'HTTP/1.1 103 Early', ' Hints\r\nLink: </b.css>; rel=preload\r\n\r\n',
                jsonResponse(req, 'X-Final: yes\r\n')], 30);
        }
    });
    const proxy = await startMcpeek(t, up.url);
    for (const id of [1, 2]) {
        const res = await rawExchange(proxy.port, { body: rpcBody(id) });
        const text = res.raw.toString('latin1');
        assert.match(text, /^HTTP\/1\.1 200 /, `request ${id}: the client's first status line:\n${text}`);
        assert.equal((text.match(/^HTTP\/1\.\d \d{3}/gm) || []).length, 1, `request ${id}: more than one status line:\n${text}`);
        assert.doesNotMatch(text, /Early Hints|Continue|\.css/, `request ${id}: an interim answer was relayed:\n${text}`);
        assert.match(res.head, /\r\nX-Final: yes/i, `request ${id}: the final head's headers:\n${res.head}`);
        assert.match(res.body.toString('utf8'), new RegExp(`"id":${id}\\b`), `request ${id}: body ${res.body}`);
    }
    assert.equal(up.connections, 1, `interim answers made the connection unusable (${up.connections} connections)`);
    const lines = await proxy.expectLogCount(2);
    lines.forEach((l, i) => assertCleanLine(l, i + 1, { response: 'json' }));
});

test('http10_close_delimited_answer_is_relayed_completely', only, async (t) => {
    const payload = Buffer.from(rpcAnswer(1, { blob: randomBytes(96 * 1024).toString('base64') }));
    const up = await startRawUpstream(t, async (sock, req) => {
        if (req.id === 1) {
            const pieces = [Buffer.from('HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n')];
            for (let p = 0; p < payload.length; p += 7777) pieces.push(payload.subarray(p, p + 7777));
            await writeSlowly(sock, pieces, 1);
            sock.end();
        } else {
            // HTTP/1.1 without Content-Length or chunked: also ends at the close.
            sock.end(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n${rpcAnswer(req.id)}`);
        }
    });
    const proxy = await startMcpeek(t, up.url);
    const res = await post(proxy, 1, { timeoutMs: 60000 });
    assert.equal(res.status, 200);
    assert.equal(res.body.length, payload.length, 'close-delimited body length through mcpeek');
    assert.equal(sha256(res.body), sha256(payload), 'close-delimited body differs');
    assertAnswer(await post(proxy, 2), 2);
    assertAnswer(await post(proxy, 3), 3);
    assert.equal(up.connections, 3, 'a close-delimited answer leaves no connection to reuse');
    const lines = await proxy.expectLogCount(3);
    assertCleanLine(lines[0], 1, { response: 'json', bytes_out: payload.length });
    assertCleanLine(lines[1], 2);
    assertCleanLine(lines[2], 3);
});

// A head-only answer (204, Content-Length: 0, a HEAD response) must reach the client at once
// and leave both connections usable. (Under evhttp and its guard filter such a head was held
// back until more output followed, and nothing followed.)
const SHORT = 5000 * TIME_SCALE; // a lost answer fails in seconds, not the default 15 s

test('no_body_answers_204_202_and_head_keep_the_connection_usable', only, async (t) => {
    const up = await startRawUpstream(t, (sock, req) => {
        if (req.method === 'HEAD') {
            // A HEAD answer announces a length but carries no body.
            sock.write('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12345\r\n\r\n');
        } else if (req.id === 1) {
            sock.write('HTTP/1.1 204 No Content\r\nX-Seen: 1\r\n\r\n');
        } else if (req.id === 2) {
            sock.write('HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n');
        } else if (req.id === 4) {
            sock.write('HTTP/1.1 204 No Content\r\n\r\nleftover'); // bytes a 204 cannot have
        } else {
            sock.write(jsonResponse(req));
        }
    });
    const proxy = await startMcpeek(t, up.url);
    const r204 = await post(proxy, 1, { timeoutMs: SHORT });
    assert.equal(r204.status, 204, `204: ${r204.status} ${r204.text()}`);
    assert.equal(r204.body.length, 0);
    assert.equal(r204.headers['x-seen'], '1');
    const r202 = await post(proxy, 2, { timeoutMs: SHORT });
    assert.equal(r202.status, 202, `202: ${r202.status} ${r202.text()}`);
    assert.equal(r202.body.length, 0);
    const head = await request(proxy.url, { method: 'HEAD', headers: [['Accept', 'application/json, text/event-stream']], timeoutMs: SHORT });
    assert.equal(head.status, 200, `HEAD: ${head.status}`);
    assert.equal(head.body.length, 0);
    assertAnswer(await post(proxy, 3, { timeoutMs: SHORT }), 3);
    assert.equal(up.connections, 1, `no-body answers broke connection reuse (${up.connections} connections)`);
    const r204b = await post(proxy, 4, { timeoutMs: SHORT });
    assert.equal(r204b.status, 204);
    assert.equal(r204b.body.length, 0, `204 relayed a body: ${r204b.text()}`);
    // The leftover bytes are libcurl's to drop (they came in the same read as the head);
    // what matters is that they never reach a client, as the next answer or otherwise.
    assertAnswer(await post(proxy, 5, { timeoutMs: SHORT }), 5);
    const lines = await proxy.expectLogCount(6);
    expectFields(lines[0], { status: 204, rpc_id: 1, response: 'empty' }, 'log line of the 204');
    expectFields(lines[1], { status: 202, rpc_id: 2, response: 'empty' }, 'log line of the 202');
    expectFields(lines[2], { status: 200, http_method: 'HEAD', response: 'empty' }, 'log line of the HEAD');
    assertCleanLine(lines[3], 3);
    expectFields(lines[4], { status: 204, rpc_id: 4, response: 'empty' }, 'log line of the 204 with leftover');
    assertCleanLine(lines[5], 5);
    for (const l of lines) assert.equal(l.error, undefined, `error logged: ${JSON.stringify(l)}`);
});

// ---- broken upstreams -------------------------------------------------------------------

test('malformed_upstream_answers_get_502_upstream_error', only, async (t) => {
    const answers = {
        1: 'HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n',
        2: 'garbage, not HTTP at all\r\n\r\n',
        3: 'SSH-2.0-OpenSSH_9.6\r\n',
        4: 'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n folded: continuation\r\nContent-Length: 2\r\n\r\n{}',
        5: 'HTTP/1.1 200 OK\r\nBad Name: x\r\nContent-Length: 2\r\n\r\n{}',
        6: 'HTTP/1.1 200 OK\r\nContent-Length: 12abc\r\n\r\n{}',
        7: 'HTTP/2 200\r\n\r\n',
        8: 'HTTP/1.1 200 OK\r\nX-Nul: a\u0000b\r\nContent-Length: 2\r\n\r\n{}',
    };
    const up = await startRawUpstream(t, (sock, req) => sock.write(answers[req.id] ?? jsonResponse(req)));
    const proxy = await startMcpeek(t, up.url);
    const ids = Object.keys(answers).map(Number);
    for (const id of ids) {
        const res = await post(proxy, id);
        try { assertRpc502(res, id); } catch (e) { e.message = `upstream answer ${JSON.stringify(answers[id])}: ${e.message}`; throw e; }
    }
    assertAnswer(await post(proxy, 99), 99); // and a sane answer still works
    const lines = await proxy.expectLogCount(ids.length + 1);
    ids.forEach((id, i) => expectFields(lines[i],
        { status: 502, rpc_id: id, error: 'upstream_error', level: 'warn', rpc_error_code: -32000 },
        `log line for upstream answer ${JSON.stringify(answers[id])}`));
    assertCleanLine(lines[ids.length], 99);
});

test('answers_with_conflicting_framing_headers_get_502_instead_of_desynchronizing_the_client', only, async (t) => {
    // Transfer-Encoding beside Content-Length, or two Content-Lengths: relayed, the client
    // would frame the body differently than mcpeek did and read the rest as a next response.
    const body = rpcAnswer(0, { x: '0123456789' });
    const chunked = `${Buffer.byteLength(body).toString(16)}\r\n${body}\r\n0\r\n\r\n`;
    const answers = {
        1: `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n${chunked}`,
        2: `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n${chunked}`,
        3: `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nContent-Length: 10\r\n\r\n${body}`,
        4: `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
        // The codings split over two fields ("gzip, chunked"): refused rather than framed
        // by the first field alone.
        5: `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n${chunked}`,
    };
    // Codings other than a lone "chunked" ("chunked, gzip": close-delimited, RFC 9112 6.3):
    // mcpeek cannot re-frame such a body faithfully, so it is refused too.
    answers[6] = `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked, gzip\r\n\r\n${chunked}`;
    const up = await startRawUpstream(t, (sock, req) => {
        if (req.id === 6) sock.end(answers[6]);
        else if (answers[req.id]) sock.write(answers[req.id]);
        else sock.write(jsonResponse(req));
    });
    const proxy = await startMcpeek(t, up.url);
    // One kept-alive client connection throughout: a desynchronized answer would show up as
    // the next request's answer.
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    t.after(() => agent.destroy());
    for (const id of [1, 2, 3, 4, 5, 6]) {
        const res = await post(proxy, id, { agent });
        try { assertRpc502(res, id); } catch (e) { e.message = `upstream answer ${JSON.stringify(answers[id])}: ${e.message}`; throw e; }
    }
    assertAnswer(await post(proxy, 7, { agent }), 7);
    const lines = await proxy.expectLogCount(7);
    for (const id of [1, 2, 3, 4, 5, 6]) {
        expectFields(lines[id - 1], { status: 502, rpc_id: id, error: 'upstream_error' },
            `log line for upstream answer ${JSON.stringify(answers[id])}`);
    }
    assertCleanLine(lines[6], 7);
});

test('chunked_framing_error_after_the_head_cuts_the_client_off_and_logs_upstream_error', only, async (t) => {
    // The head is relayed at once, so mcpeek cannot answer 502 any more: the client must see
    // the body cut (no terminating chunk), not a short body that looks complete.
    const up = await startRawUpstream(t, (sock, req) => {
        if (req.id === 1) {
            writeSlowly(sock, ['HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n',
                '5\r\n{"jso\r\n', 'zz\r\nnot hex\r\n0\r\n\r\n'], 30);
        } else {
            sock.write(jsonResponse(req));
        }
    });
    const proxy = await startMcpeek(t, up.url);
    const res = await rawExchange(proxy.port, { body: rpcBody(1) });
    assert.equal(res.status, 200, `status ${res.status}: ${res.raw.toString('latin1')}`);
    const text = res.raw.toString('latin1');
    assert.doesNotMatch(text, /not hex/, 'bytes after the framing error were relayed');
    if (/\r\ntransfer-encoding: chunked/i.test(res.head)) {
        assert.doesNotMatch(res.body.toString('latin1'), /(^|\r\n)0\r\n\r\n$/, `the cut body ends like a complete one:\n${text}`);
    } else {
        const m = /\r\ncontent-length: (\d+)/i.exec(res.head);
        assert.ok(!m || Number(m[1]) > res.body.length, `the cut body looks complete:\n${text}`);
    }
    assertAnswer(await post(proxy, 2), 2);
    const lines = await proxy.expectLogCount(2);
    expectFields(lines[0], { status: 200, rpc_id: 1, error: 'upstream_error', level: 'warn' }, 'log line of the cut answer');
    assertCleanLine(lines[1], 2);
});

test('upstream_closing_mid_body_cuts_the_client_off_and_logs_upstream_reset', only, async (t) => {
    // A Content-Length body and a chunked body, each cut by the upstream half way: the client
    // must not get something that looks like a complete answer.
    const payload = rpcAnswer(0, { blob: 'x'.repeat(4000) });
    const up = await startRawUpstream(t, async (sock, req) => {
        if (req.id === 1) {
            await writeSlowly(sock, [`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${payload.length}\r\n\r\n`,
                payload.slice(0, 1000)], 30);
            sock.destroy();
        } else if (req.id === 2) {
            await writeSlowly(sock, ['HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n',
                `${(payload.length).toString(16)}\r\n${payload.slice(0, 1000)}`], 30);
            sock.destroy();
        } else {
            sock.write(jsonResponse(req));
        }
    });
    const proxy = await startMcpeek(t, up.url);
    for (const id of [1, 2]) {
        const res = await rawExchange(proxy.port, { body: rpcBody(id) });
        const text = res.raw.toString('latin1');
        assert.equal(res.status, 200, `request ${id}: ${text.slice(0, 300)}`);
        const cl = /\r\ncontent-length: (\d+)/i.exec(res.head);
        if (cl) {
            assert.ok(res.body.length < Number(cl[1]), `request ${id}: the cut body looks complete (${res.body.length} of ${cl[1]} bytes)`);
        } else {
            assert.match(res.head, /\r\ntransfer-encoding: chunked/i, `request ${id}: neither length nor chunked:\n${res.head}`);
            assert.doesNotMatch(res.body.toString('latin1'), /(^|\r\n)0\r\n\r\n$/, `request ${id}: the cut body ends like a complete one`);
        }
        assert.ok(res.body.includes(payload.slice(0, 500)), `request ${id}: the bytes before the cut were relayed`);
    }
    assertAnswer(await post(proxy, 3), 3);
    const lines = await proxy.expectLogCount(3);
    for (const id of [1, 2]) {
        expectFields(lines[id - 1], { status: 200, rpc_id: id, error: 'upstream_reset', level: 'warn' }, `log line of cut answer ${id}`);
    }
    assertCleanLine(lines[2], 3);
});

test('short_sse_answer_closes_the_client_connection_instead_of_leaving_it_out_of_step', only, async (t) => {
    // An SSE answer that declares 1000 bytes and sends 13 before closing, and a chunked SSE
    // answer that ends without its last chunk. The client's keep-alive connection must be
    // closed after what was relayed: left open, the next answer on it would be read as the
    // rest of this one (issue 12, defect 2).
    const up = await startRawUpstream(t, async (sock, req) => {
        if (req.id === 1) {
            await writeSlowly(sock, ['HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 1000\r\n\r\n',
                'data: {"a":1}'], 30);
            sock.destroy();
        } else if (req.id === 3) {
            await writeSlowly(sock, ['HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n',
                'f\r\ndata: {"a":3}\n\n\r\n'], 30);
            sock.destroy();
        } else {
            sock.write(jsonResponse(req));
        }
    });
    const proxy = await startMcpeek(t, up.url);
    for (const [cut, next] of [[1, 2], [3, 4]]) {
        // One client connection: the cut answer, then (if the connection survived) the next.
        const sock = net.connect(proxy.port, '127.0.0.1');
        t.after(() => sock.destroy());
        let raw = '';
        let closed = false;
        sock.on('data', (d) => { raw += d.toString('latin1'); });
        sock.on('close', () => { closed = true; });
        sock.on('error', () => {});
        const req = (id) => {
            const body = rpcBody(id);
            return `POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:${proxy.port}\r\nContent-Type: application/json\r\n` +
                `Accept: application/json, text/event-stream\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
        };
        sock.write(req(cut));
        const deadline = Date.now() + 5000 * TIME_SCALE;
        while (!closed && Date.now() < deadline) await sleep(20);
        assert.ok(closed, `request ${cut}: the client connection stayed open after a cut answer; got ${JSON.stringify(raw)}`);
        assert.match(raw, /^HTTP\/1\.1 200 /, `request ${cut}: the head was relayed`);
        assert.ok(raw.includes(`data: {"a":${cut}}`), `request ${cut}: the bytes before the cut were relayed`);
        if (/\r\ntransfer-encoding: chunked/i.test(raw)) {
            assert.doesNotMatch(raw, /\r\n0\r\n\r\n$/, `request ${cut}: the cut answer ends like a complete one`);
        }
        assertAnswer(await post(proxy, next), next);
    }
    const lines = await proxy.expectLogCount(4);
    for (const [i, id] of [[0, 1], [2, 3]]) {
        expectFields(lines[i], { status: 200, rpc_id: id, response: 'sse', error: 'upstream_reset', level: 'warn' },
            `log line of cut answer ${id}`);
    }
    assertCleanLine(lines[1], 2);
    assertCleanLine(lines[3], 4);
});

test('response_head_over_64_kib_gets_502_and_one_just_under_passes', only, async (t) => {
    // 97 padding headers of 600 bytes (99 with the other two; the limit is 100): ~58 KiB,
    // the read buffer grows twice.
    // 90 of 800 bytes: ~71 KiB, over the cap.
    const pad = (n, size) => Array.from({ length: n }, (_, i) => `X-Pad-${i}: ${'v'.repeat(size)}\r\n`).join('');
    const up = await startRawUpstream(t, (sock, req) => {
        if (req.id === 1) sock.write(jsonResponse(req, pad(97, 600)));
        else if (req.id === 2) writeSlowly(sock, [`HTTP/1.1 200 OK\r\n${pad(90, 800)}`, jsonResponse(req).slice(17)], 10);
        else sock.write(jsonResponse(req));
    });
    const proxy = await startMcpeek(t, up.url);
    const under = await rawExchange(proxy.port, { body: rpcBody(1) });
    assert.equal(under.status, 200, `~58 KiB head: status ${under.status}: ${under.head.slice(0, 200)}`);
    assert.match(under.head, /\r\nX-Pad-96: v{600}(\r\n|$)/i, 'the last padding header of a ~58 KiB head');
    const over = await post(proxy, 2);
    assertRpc502(over, 2);
    assertAnswer(await post(proxy, 3), 3);
    const lines = await proxy.expectLogCount(3);
    assertCleanLine(lines[0], 1);
    expectFields(lines[1], { status: 502, rpc_id: 2, error: 'upstream_error' }, 'log line of the oversized head');
    assertCleanLine(lines[2], 3);
});

test('extra_bytes_after_a_complete_answer_are_dropped_with_the_connection', only, async (t) => {
    // A Content-Length answer followed by a second response nobody asked for (a response
    // splitting attempt): in the same write, and a moment after the answer.
    const smuggled = 'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 26\r\n\r\n{"smuggled":"not-for-you"}';
    const up = await startRawUpstream(t, (sock, req) => {
        if (req.id === 1) sock.write(jsonResponse(req) + smuggled);
        else if (req.id === 3) writeSlowly(sock, [jsonResponse(req), smuggled], 50);
        else sock.write(jsonResponse(req));
    });
    const proxy = await startMcpeek(t, up.url);
    for (const id of [1, 2, 3]) {
        const res = await post(proxy, id);
        assertAnswer(res, id);
        assert.doesNotMatch(res.text(), /smuggled/, `answer ${id} carries the extra bytes`);
        if (id === 3) await sleep(300 * TIME_SCALE); // the late extra bytes arrive while idle
    }
    const r4 = await post(proxy, 4);
    assertAnswer(r4, 4);
    assert.doesNotMatch(r4.text(), /smuggled/, 'answer 4 is the extra bytes left from answer 3');
    // Bytes read with the answer are dropped with libcurl's buffer; bytes that arrive while
    // the connection idles make mcpeek retire it, so request 4 needs a new connection.
    const conn3 = up.requests.find((r) => r.id === 3).connId;
    assert.notEqual(up.requests.find((r) => r.id === 4).connId, conn3,
        `request 4 reused the connection that sent extra bytes: ${JSON.stringify(up.requests.map((r) => [r.id, r.connId]))}`);
    const lines = await proxy.expectLogCount(4);
    lines.forEach((l, i) => assertCleanLine(l, i + 1, { bytes_out: Buffer.byteLength(rpcAnswer(i + 1)) }));
});

// ---- headers ----------------------------------------------------------------------------

test('hop_by_hop_headers_and_those_named_in_connection_are_not_relayed', only, async (t) => {
    const up = await startRawUpstream(t, (sock, req) => {
        const body = rpcAnswer(req.id);
        sock.write('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n' +
            'Connection: keep-alive, x-SECRET , X-Also-Private\r\n' +
            'X-Secret: s3cr3t\r\nX-Also-Private: p\r\nKeep-Alive: timeout=99\r\n' +
            'Proxy-Authenticate: Basic realm="up"\r\nUpgrade: h2c\r\nTrailer: X-Checksum\r\n' +
            'Proxy-Connection: keep-alive\r\nTE: trailers\r\nX-End-To-End: kept\r\n' +
            `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    });
    const proxy = await startMcpeek(t, up.url);
    const res = await post(proxy, 1);
    assertAnswer(res, 1);
    const names = [];
    for (let i = 0; i < res.rawHeaders.length; i += 2) names.push(res.rawHeaders[i].toLowerCase());
    const h = res.headers;
    assert.equal(h['x-end-to-end'], 'kept', `an end-to-end header was dropped: ${JSON.stringify(res.rawHeaders)}`);
    for (const name of ['x-secret', 'x-also-private', 'proxy-authenticate', 'upgrade', 'trailer', 'proxy-connection', 'te']) {
        assert.ok(!names.includes(name), `${name} was relayed to the client: ${JSON.stringify(res.rawHeaders)}`);
    }
    assert.notEqual(h['keep-alive'], 'timeout=99', 'the upstream\'s Keep-Alive was relayed');
    assert.doesNotMatch(h.connection || '', /secret|private/i, `Connection relayed: ${h.connection}`);
    assertAnswer(await post(proxy, 2), 2);
    assert.equal(up.connections, 1, 'Connection: keep-alive with other tokens still allows reuse');
    const lines = await proxy.expectLogCount(2);
    assertCleanLine(lines[0], 1);
    assertCleanLine(lines[1], 2);
});

// ---- the target -------------------------------------------------------------------------

test('upstream_host_that_does_not_resolve_gets_502_upstream_dns_and_is_not_ready', only, async (t) => {
    // libcurl resolves the name per connection (cached for upstream_dns_ttl): mcpeek starts,
    // and each request says why it failed.
    const adminPort = await freePort();
    const proxy = await startMcpeek(t, 'http://no-such-host.invalid/mcp', { adminPort });
    assertRpc502(await post(proxy, 1), 1);
    const lines = await proxy.expectLogCount(1);
    expectFields(lines[0], { status: 502, rpc_id: 1, error: 'upstream_dns', level: 'warn' }, 'log line of request 1');
    const ready = await request(`http://127.0.0.1:${adminPort}/readyz`, { method: 'GET' });
    assert.equal(ready.status, 503, `readyz with an unresolvable upstream: ${ready.status} ${ready.text()}`);
});

test('localhost_upstream_url_reaches_a_server_listening_on_127_0_0_1', only, async (t) => {
    const addrs = await dns.lookup('localhost', { all: true, verbatim: true });
    t.diagnostic(`localhost resolves to ${addrs.map((a) => a.address).join(', ')}` +
        (addrs[0]?.family === 6 ? ' (IPv6 first: the fallback to the next address is exercised)' : ' (no IPv6 first: fallback not exercised here)'));
    const up = await startScriptedUpstream(t, (req, res, body) => jsonResult(res, body, { host: req.headers.host }));
    const proxy = await startMcpeek(t, `http://localhost:${up.port}/mcp`);
    for (const id of [1, 2]) {
        const res = await post(proxy, id);
        assertAnswer(res, id);
        assert.equal(res.json().result.host, `localhost:${up.port}`, 'Host header the upstream saw');
    }
    assert.equal(up.connections, 1, `the pool was not used for a localhost target (${up.connections} connections)`);
    const lines = await proxy.expectLogCount(2);
    lines.forEach((l, i) => assertCleanLine(l, i + 1));
});

test('ipv6_literal_upstream_url_is_used_with_a_bracketed_host_header', only, async (t) => {
    let up;
    try {
        up = await startRawUpstream(t, (sock, req) => sock.write(jsonResponse(req, '', { head: req.head })), { host: '::1' });
    } catch (e) {
        t.skip(`no IPv6 loopback here (${e.message})`);
        return;
    }
    assert.equal(up.url, `http://[::1]:${up.port}/mcp`);
    const proxy = await startMcpeek(t, up.url);
    for (const id of [1, 2]) {
        const res = await post(proxy, id);
        assertAnswer(res, id);
        assert.match(res.json().result.head, new RegExp(`\r\nHost: \\[::1\\]:${up.port}(\r\n|$)`, 'i'),
            `Host header the upstream saw:\n${res.json().result.head}`);
    }
    assert.equal(up.connections, 1, `the pool was not used for an IPv6 target (${up.connections} connections)`);
    const lines = await proxy.expectLogCount(2);
    lines.forEach((l, i) => assertCleanLine(l, i + 1));
});
