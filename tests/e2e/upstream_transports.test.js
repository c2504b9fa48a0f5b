// What libcurl gives mcpeek's upstream side beyond plain HTTP/1.1 over TCP, each behind its
// config key: a Unix socket (upstream_unix_socket), a name that is resolved again when its DNS
// answer changes (upstream_dns_ttl), and HTTP/2 with many streams on few connections
// (upstream_http2). Every upstream here is a real server (node's http and http2 modules).

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import os from 'node:os';
import path from 'node:path';
import test from 'node:test';
import { makePki } from './lib/certs.js';
import {
    DIRECT, expectFields, freePort, MCPEEK_WRAPPER, openStream, POST_HEADERS, request, sleep,
} from './lib/harness.js';
import { startMcpeek } from './lib/harness.js';

const only = { skip: DIRECT ? 'needs mcpeek (MCPEEK_E2E_DIRECT=1)' : false };

const rpcBody = (id, name = 'probe') => JSON.stringify({
    jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: {} },
});

// A JSON-RPC answer naming the server that gave it, so a test can tell servers apart.
function answer(res, body, server, extra = {}) {
    let id = null;
    try { id = JSON.parse(body).id ?? null; } catch { /* not JSON-RPC */ }
    const out = JSON.stringify({ jsonrpc: '2.0', id, result: { server, ...extra } });
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(out) });
    res.end(out);
}

function readBody(req) {
    return new Promise((resolve) => {
        const chunks = [];
        req.on('data', (c) => chunks.push(c));
        req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    });
}

// An HTTP/1.1 server on `listenArg` (a port and host, or a Unix socket path) answering every
// request with answer(); closed at teardown.
async function startNamedServer(t, name, listenArgs) {
    const state = { requests: 0, sockets: new Set() };
    state.close = () => new Promise((resolve) => {
        for (const s of state.sockets) s.destroy();
        server.close(() => resolve());
    });
    const server = http.createServer(async (req, res) => {
        state.requests += 1;
        answer(res, await readBody(req), name, { host: req.headers.host, url: req.url });
    });
    server.on('connection', (s) => { state.sockets.add(s); s.on('close', () => state.sockets.delete(s)); });
    await new Promise((resolve, reject) => server.once('error', reject).listen(...listenArgs, resolve));
    t.after(() => (server.listening ? state.close() : undefined));
    return state;
}

async function post(url, id) {
    return request(url, { method: 'POST', headers: POST_HEADERS, body: rpcBody(id) });
}

test('upstream_unix_socket_reaches_a_server_that_listens_on_no_port', only, async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mcpeek-uds-'));
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
    const sock = path.join(dir, 'mcp.sock');
    const up = await startNamedServer(t, 'uds', [sock]);
    // The URL still gives the path and the Host header; nothing listens on its port.
    const unused = await freePort();
    const proxy = await startMcpeek(t, `http://mcp.internal:${unused}/mcp`, {
        args: ['--upstream-unix-socket', sock],
    });
    for (const id of [1, 2, 3]) {
        const res = await post(proxy.url, id);
        assert.equal(res.status, 200, `request ${id}: ${res.status} ${res.text()}`);
        const r = res.json().result;
        assert.equal(r.server, 'uds');
        assert.equal(r.host, `mcp.internal:${unused}`, 'Host header from the URL');
        assert.equal(r.url, '/mcp');
    }
    assert.equal(up.requests, 3);
    const lines = await proxy.expectLogCount(3);
    lines.forEach((l, i) => expectFields(l, { status: 200, rpc_id: i + 1, response: 'json' }));
    for (const l of lines) assert.equal(l.error, undefined, JSON.stringify(l));

    // The server goes away (and its socket with it): a clear upstream_connect, not a hang.
    await up.close();
    assert.ok(!fs.existsSync(sock), 'the socket file is gone with the server');
    const gone = await post(proxy.url, 4);
    assert.equal(gone.status, 502, `with the socket gone: ${gone.status} ${gone.text()}`);
    const [, , , l4] = await proxy.expectLogCount(4);
    expectFields(l4, { status: 502, rpc_id: 4, error: 'upstream_connect' });
});

// mcpeek runs in a mount namespace of its own in which /etc/hosts is a file the test owns:
// rewriting it is a DNS change for mcpeek alone.
function canUnshare() {
    if (MCPEEK_WRAPPER.length) return 'not under a wrapper (valgrind)';
    try {
        execFileSync('unshare', ['-m', 'true'], { stdio: 'ignore' });
        return false;
    } catch (e) {
        return `unshare -m does not work here (${e.message}): needs root or user namespaces`;
    }
}

test('upstream_name_is_resolved_again_after_upstream_dns_ttl_when_its_address_changes', { skip: DIRECT ? 'needs mcpeek' : canUnshare() }, async (t) => {
    const port = await freePort();
    const a = await startNamedServer(t, 'A', [port, '127.0.0.2']);
    const b = await startNamedServer(t, 'B', [port, '127.0.0.3']);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mcpeek-dns-'));
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
    const hosts = path.join(dir, 'hosts');
    const NAME = 'mcp-upstream.mcpeek.test';
    // Rewritten in place (same inode), as the bind mount needs.
    const point = (ip) => fs.writeFileSync(hosts, `127.0.0.1 localhost\n${ip} ${NAME}\n`);
    point('127.0.0.2');
    const proxy = await startMcpeek(t, `http://${NAME}:${port}/mcp`, {
        // A new connection per request, so only the name's resolution decides the server.
        args: ['--upstream-dns-ttl', '1s', '--upstream-keepalive', '0'],
        prefix: ['unshare', '-m', 'sh', '-c', 'mount --bind "$0" /etc/hosts && exec "$@"', hosts],
    });
    const servedBy = async (id) => {
        const res = await post(proxy.url, id);
        assert.equal(res.status, 200, `request ${id}: ${res.status} ${res.text()}`);
        return res.json().result.server;
    };
    assert.equal(await servedBy(1), 'A');
    assert.equal(await servedBy(2), 'A');
    point('127.0.0.3');
    const switched = Date.now();
    let id = 3;
    let server = 'A';
    while (server === 'A' && Date.now() - switched < 5000) {
        server = await servedBy(id++);
        if (server === 'A') await sleep(100);
    }
    const after = Date.now() - switched;
    t.diagnostic(`new connections reached the new address ${after} ms after the DNS change (upstream_dns_ttl 1s)`);
    assert.equal(server, 'B', 'requests still reach the old address 5 s after the DNS change');
    assert.ok(after <= 2500, `the switch took ${after} ms, more than upstream_dns_ttl (1 s) allows`);
    assert.equal(await servedBy(id++), 'B', 'and stay there');
    assert.ok(a.requests >= 2 && b.requests >= 2, `A saw ${a.requests}, B ${b.requests}`);
    const lines = await proxy.expectLogCount(id - 1);
    for (const l of lines) assert.equal(l.error, undefined, JSON.stringify(l));
});

// An HTTP/2 server (cleartext with prior knowledge, or TLS with ALPN) answering each POST with
// an SSE stream that stays open until release(); counts the connections (sessions) it saw.
async function startH2Upstream(t, { tls } = {}) {
    const state = { sessions: 0, streams: 0, open: new Set(), versions: new Set() };
    const onRequest = async (req, res) => {
        state.versions.add(req.httpVersion);
        await readBody(req);
        state.streams += 1;
        if ((req.headers.accept || '').includes('text/event-stream')) {
            res.writeHead(200, { 'content-type': 'text/event-stream' });
            res.write(`data: ${JSON.stringify({ jsonrpc: '2.0', method: 'notifications/progress', params: { n: state.streams } })}\n\n`);
            state.open.add(res);
            res.on('close', () => state.open.delete(res));
        } else {
            const out = JSON.stringify({ jsonrpc: '2.0', id: 1, result: { version: req.httpVersion } });
            res.writeHead(200, { 'content-type': 'application/json' });
            res.end(out);
        }
    };
    const server = tls
        ? http2.createSecureServer({ cert: fs.readFileSync(tls.cert), key: fs.readFileSync(tls.key), allowHTTP1: true }, onRequest)
        : http2.createServer({}, onRequest);
    const sessions = new Set();
    server.on('session', (s) => { state.sessions += 1; sessions.add(s); s.on('close', () => sessions.delete(s)); });
    const port = await new Promise((resolve, reject) => {
        server.once('error', reject).listen(0, '127.0.0.1', () => resolve(server.address().port));
    });
    t.after(() => new Promise((resolve) => {
        for (const s of sessions) s.destroy();
        server.close(() => resolve());
    }));
    state.port = port;
    state.release = () => { for (const r of state.open) r.end(`data: {"jsonrpc":"2.0","id":1,"result":{}}\n\n`); };
    return state;
}

// N concurrent SSE streams through mcpeek to an HTTP/2 upstream; returns the lines.
async function concurrentSse(t, proxy, up, N) {
    const agent = new http.Agent({ keepAlive: true, maxSockets: N });
    t.after(() => agent.destroy());
    const streams = await Promise.all(Array.from({ length: N }, async (_, i) => {
        const { res } = await openStream(proxy.url, { headers: POST_HEADERS, body: rpcBody(i + 1), agent });
        assert.equal(res.statusCode, 200);
        assert.match(res.headers['content-type'] || '', /^text\/event-stream/);
        let text = '';
        res.setEncoding('utf8');
        const first = new Promise((resolve) => res.on('data', (d) => { text += d; if (text.includes('\n\n')) resolve(); }));
        const end = new Promise((resolve) => res.on('end', resolve));
        await first;
        return { end, text: () => text };
    }));
    assert.equal(up.open.size, N, `${up.open.size} of ${N} streams open at the upstream`);
    const sessions = up.sessions;
    up.release();
    await Promise.all(streams.map((s) => s.end));
    for (const s of streams) assert.match(s.text(), /"result":\{\}/, 'each stream got its end event');
    const lines = await proxy.expectLogCount(N, 10000);
    for (const l of lines) {
        expectFields(l, { status: 200, response: 'sse', sse_events: 2 });
        assert.equal(l.error, undefined, JSON.stringify(l));
    }
    return sessions;
}

test('upstream_http2_on_carries_100_concurrent_sse_streams_on_one_tls_connection', only, async (t) => {
    const pki = makePki(t);
    const up = await startH2Upstream(t, { tls: pki.server });
    const proxy = await startMcpeek(t, `https://localhost:${up.port}/mcp`, {
        args: ['--upstream-http2', 'on', '--upstream-ca-file', pki.ca],
    });
    const sessions = await concurrentSse(t, proxy, up, 100);
    t.diagnostic(`100 concurrent SSE streams used ${sessions} upstream HTTP/2 connection(s)`);
    assert.equal(sessions, 1, `100 concurrent streams used ${sessions} upstream connections`);
    assert.deepEqual([...up.versions], ['2.0']);
});

test('upstream_http2_prior_knowledge_speaks_h2c_to_a_cleartext_server', only, async (t) => {
    // libcurl before 8.0.0 cannot reuse a prior-knowledge connection (curl issue #10634):
    // mcpeek then gives each request its own connection, and says so at start.
    const version = execFileSync('curl-config', ['--vernum'], { encoding: 'utf8' }).trim();
    const reuses = parseInt(version, 16) >= 0x080000;
    const up = await startH2Upstream(t);
    const proxy = await startMcpeek(t, `http://127.0.0.1:${up.port}/mcp`, {
        args: ['--upstream-http2', 'prior-knowledge'],
    });
    const N = 20;
    const sessions = await concurrentSse(t, proxy, up, N);
    t.diagnostic(`${N} concurrent h2c streams used ${sessions} connection(s) (libcurl ${version}, reuse ${reuses ? 'works' : 'off'})`);
    assert.equal(sessions, reuses ? 1 : N);
    assert.deepEqual([...up.versions], ['2.0']);
    if (!reuses) assert.match(proxy.proc.stderrText(), /curl issue #10634/, 'the start says why');
});

test('upstream_http2_on_negotiates_h2_with_alpn_over_https_and_off_stays_http1', only, async (t) => {
    const pki = makePki(t);
    const up = await startH2Upstream(t, { tls: pki.server });
    for (const [mode, want] of [['on', '2.0'], ['off', '1.1']]) {
        const proxy = await startMcpeek(t, `https://localhost:${up.port}/mcp`, {
            args: ['--upstream-http2', mode, '--upstream-ca-file', pki.ca],
        });
        for (const id of [1, 2]) {
            const res = await request(proxy.url, {
                method: 'POST', headers: [['Content-Type', 'application/json'], ['Accept', 'application/json']], body: rpcBody(id),
            });
            assert.equal(res.status, 200, `upstream_http2 ${mode}: ${res.status} ${res.text()}`);
            assert.equal(res.json().result.version, want, `upstream_http2 ${mode}: version the server saw`);
        }
        const lines = await proxy.expectLogCount(2);
        for (const l of lines) assert.equal(l.error, undefined, JSON.stringify(l));
    }
});
