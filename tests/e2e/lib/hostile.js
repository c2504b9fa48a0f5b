// Helpers for tests/e2e/hostile_input.test.js: raw sockets (slowloris, half uploads, idle
// connection slots), a minimal HTTP/1.1 response reader, descriptor counts from /proc, an
// upstream that answers `ping` normally and hands everything else to the test's handler, the
// "mcpeek still serves" probe, and mcpeek started from a config file alone (for SIGHUP).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import {
    CHECK_RSS, MCPEEK_BIN, MCPEEK_WRAPPER, POST_HEADERS, TIME_SCALE, procStatusKB, request, sleep,
    spawnTracked, stopProcess, waitForPort,
} from './harness.js';
import { jsonResult, startScriptedUpstream } from './scripted-upstream.js';

// An ASan build maps shadow memory and keeps a quarantine: RSS says nothing about mcpeek there,
// so RSS checks are skipped for it even when MCPEEK_E2E_CHECK_RSS=0 was not set.
export const IS_ASAN = (() => {
    try { return fs.readFileSync(MCPEEK_BIN).includes('AddressSanitizer'); } catch { return false; }
})();
export const RSS_CHECKS = CHECK_RSS && !IS_ASAN;

export const rpc = (id, method = 'tools/call', params = { name: 'probe', arguments: {} }) =>
    JSON.stringify({ jsonrpc: '2.0', id, method, params });

const isPing = (body) => {
    try { return JSON.parse(body.toString('utf8')).method === 'ping'; } catch { return false; }
};

// Scripted upstream: `ping` gets a normal JSON answer (the "still serves" probe); the rest goes
// to handler. hits() counts the non-ping requests that reached it.
export async function hostileUpstream(t, handler = (req, res, body) => jsonResult(res, body, { ok: true })) {
    const up = await startScriptedUpstream(t, (req, res, body, rec) => {
        if (isPing(body)) jsonResult(res, body, { pong: true });
        else handler(req, res, body, rec);
    });
    up.hits = () => up.requests.filter((r) => !isPing(r.body));
    return up;
}

let probeSeq = 0;
// A normal request still gets a normal answer, and is logged as one plain line.
export async function assertServes(proxy, what = 'after the hostile exchange') {
    const id = `probe-${++probeSeq}`;
    const res = await request(proxy.url, {
        method: 'POST', headers: POST_HEADERS, body: rpc(id, 'ping', {}), timeoutMs: 5000 * TIME_SCALE,
    }).catch((e) => { throw new Error(`${what}: a normal request failed: ${e.message}`); });
    assert.equal(res.status, 200, `${what}: normal request got ${res.status}: ${res.text()}`);
    assert.equal(res.json().id, id, `${what}: normal request answered with ${res.text()}`);
    if (proxy.direct) return;
    const lines = await proxy.waitForLogs(1, (l) => l.rpc_id === id);
    const l = lines.find((x) => x.rpc_id === id);
    assert.equal(l.status, 200, `${what}: probe line ${JSON.stringify(l)}`);
    assert.equal(l.error, undefined, `${what}: probe line has an error: ${JSON.stringify(l)}`);
}

export function fdCount(pid) {
    return fs.readdirSync(`/proc/${pid}/fd`).length;
}

// Waits (up to 3 s) for mcpeek's descriptor count to come back to baseline; asserts it did.
export async function assertFdsSettle(proxy, baseline, what) {
    const deadline = Date.now() + 3000 * TIME_SCALE;
    let n;
    for (;;) {
        n = fdCount(proxy.pid);
        if (n <= baseline || Date.now() > deadline) break;
        await sleep(50);
    }
    assert.ok(n <= baseline, `${what}: mcpeek holds ${n} descriptors, baseline was ${baseline}:\n` +
        fs.readdirSync(`/proc/${proxy.pid}/fd`).map((f) => {
            try { return `  ${f} -> ${fs.readlinkSync(`/proc/${proxy.pid}/fd/${f}`)}`; } catch { return `  ${f}`; }
        }).join('\n'));
    return n;
}

// Baseline after one normal exchange (so the pooled upstream connection is counted).
export async function fdBaseline(proxy) {
    await assertServes(proxy, 'warm-up');
    await sleep(100);
    return fdCount(proxy.pid);
}

export function rssMiB(proxy) {
    return procStatusKB(proxy.pid, 'VmHWM') / 1024;
}

// A raw TCP client. got() is everything received so far; closed resolves at the close.
export async function rawConnect(port) {
    const sock = net.connect(port, '127.0.0.1');
    await new Promise((resolve, reject) => { sock.once('connect', resolve); sock.once('error', reject); });
    const chunks = [];
    sock.on('data', (d) => chunks.push(d));
    sock.on('error', () => {});
    const state = { closedAt: null };
    const closed = new Promise((resolve) => sock.once('close', () => { state.closedAt = Date.now(); resolve(); }));
    return {
        sock, closed, state,
        got: () => Buffer.concat(chunks),
        isClosed: () => state.closedAt !== null,
        // Resolves with the first complete HTTP response read (or rejects on close / timeout).
        async response(timeoutMs = 5000) {
            const deadline = Date.now() + timeoutMs * TIME_SCALE;
            for (;;) {
                const r = parseResponse(Buffer.concat(chunks));
                if (r) return r;
                if (state.closedAt !== null) {
                    throw new Error(`connection closed without a complete response; got ${JSON.stringify(Buffer.concat(chunks).toString('latin1'))}`);
                }
                if (Date.now() > deadline) throw new Error(`no complete response within ${timeoutMs} ms`);
                await sleep(10);
            }
        },
    };
}

// Parses one HTTP/1.1 response (Content-Length or chunked) from buf; null if incomplete.
export function parseResponse(buf) {
    const end = buf.indexOf('\r\n\r\n');
    if (end < 0) return null;
    const head = buf.subarray(0, end).toString('latin1').split('\r\n');
    const m = head[0].match(/^HTTP\/1\.[01] (\d{3})/);
    if (!m) throw new Error(`not an HTTP response: ${JSON.stringify(head[0])}`);
    const headers = {};
    for (const line of head.slice(1)) {
        const i = line.indexOf(':');
        headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
    }
    let rest = buf.subarray(end + 4);
    let body;
    if (headers['content-length'] !== undefined) {
        const n = Number(headers['content-length']);
        if (rest.length < n) return null;
        body = rest.subarray(0, n);
    } else if (/chunked/i.test(headers['transfer-encoding'] || '')) {
        const parts = [];
        for (;;) {
            const nl = rest.indexOf('\r\n');
            if (nl < 0) return null;
            const n = parseInt(rest.subarray(0, nl).toString('latin1'), 16);
            if (n === 0) break;
            if (rest.length < nl + 2 + n + 2) return null;
            parts.push(rest.subarray(nl + 2, nl + 2 + n));
            rest = rest.subarray(nl + 2 + n + 2);
        }
        body = Buffer.concat(parts);
    } else {
        body = rest;
    }
    return { status: Number(m[1]), headers, body, text: () => body.toString('utf8'), json: () => JSON.parse(body.toString('utf8')) };
}

// Raw request text for a POST of body (string or Buffer) to path.
export function rawPost(port, body, { path = '/mcp', extra = [], keepAlive = true, contentLength } = {}) {
    const b = Buffer.isBuffer(body) ? body : Buffer.from(body);
    const lines = [`POST ${path} HTTP/1.1`, `Host: 127.0.0.1:${port}`, 'Content-Type: application/json',
        'Accept: application/json, text/event-stream', `Content-Length: ${contentLength ?? b.length}`,
        ...(keepAlive ? [] : ['Connection: close']), ...extra];
    return Buffer.concat([Buffer.from(`${lines.join('\r\n')}\r\n\r\n`), b]);
}

// Writes buf one byte per intervalMs until done or the peer closed/answered. Returns the
// number of bytes written.
export async function trickle(conn, buf, intervalMs, stop = () => false) {
    let i = 0;
    while (i < buf.length && !conn.isClosed() && conn.got().length === 0 && !stop()) {
        conn.sock.write(buf.subarray(i, i + 1));
        i += 1;
        await sleep(intervalMs);
    }
    return i;
}

// Listens on a given (free) port later: for "the upstream came back" after a refused connect.
export async function listenOn(t, port, handler) {
    const sockets = new Set();
    const server = http.createServer((req, res) => {
        const chunks = [];
        req.on('data', (c) => chunks.push(c));
        req.on('end', () => handler(req, res, Buffer.concat(chunks)));
    });
    server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
    await new Promise((resolve, reject) => { server.once('error', reject); server.listen(port, '127.0.0.1', resolve); });
    t.after(() => new Promise((resolve) => { for (const s of sockets) s.destroy(); server.close(() => resolve()); }));
    return server;
}

const SANITIZER_MARKERS = ['ERROR: AddressSanitizer', 'ERROR: LeakSanitizer', 'runtime error:',
    'WARNING: ThreadSanitizer'];

// mcpeek started with `-c conf` and nothing else (so SIGHUP re-reads everything from the file),
// wrapped like startMcpeek. Teardown fails the test when it died, was flagged by a sanitizer or
// valgrind (exit 99), or ignored SIGTERM. readLines() parses the log file.
export async function startMcpeekFromConfig(t, confPath, { port, logFile }) {
    const cmd = MCPEEK_WRAPPER.length ? MCPEEK_WRAPPER[0] : MCPEEK_BIN;
    const args = MCPEEK_WRAPPER.length ? [...MCPEEK_WRAPPER.slice(1), MCPEEK_BIN, '-c', confPath] : ['-c', confPath];
    const proc = spawnTracked(null, 'mcpeek', cmd, args);
    proc.cmdline = [cmd, ...args].join(' ');
    t.after(async () => {
        const wasRunning = proc.exitInfo === null;
        const early = proc.exitInfo;
        const res = await stopProcess(proc, 3000 * TIME_SCALE);
        const stderr = proc.stderrText();
        const found = SANITIZER_MARKERS.filter((m) => stderr.includes(m));
        if (found.length) throw new Error(`mcpeek stderr has a sanitizer report (${found.join(', ')}):\n${stderr}`);
        if (!wasRunning) throw new Error(`mcpeek died during the test (exit ${JSON.stringify(early)}):\n${stderr}`);
        if (res.code === 99) throw new Error(`valgrind reported errors (exit 99):\n${stderr}`);
        if (res.signal === 'SIGKILL') throw new Error(`mcpeek ignored SIGTERM and was killed:\n${stderr}`);
    });
    await waitForPort(port, { proc, timeoutMs: 10000 * TIME_SCALE * (MCPEEK_WRAPPER.length ? 2 : 1) });
    const readLines = () => {
        let text;
        try { text = fs.readFileSync(logFile, 'utf8'); } catch { return []; }
        const lines = text.split('\n');
        lines.pop();
        return lines.map((line) => JSON.parse(line));
    };
    return { proc, pid: proc.pid, port, url: `http://127.0.0.1:${port}/mcp`, readLines };
}
