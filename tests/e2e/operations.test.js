// Operating mcpeek like nginx: config files and -t, flag precedence, SIGHUP reload, SIGUSR1 log
// reopen, graceful SIGTERM, and the admin listener (/healthz, /readyz, /metrics).
// mcpeek is started from a config file (lib/ops.js) in front of scripted node upstreams; every
// process is stopped at teardown, and a test fails on a sanitizer report or an unexpected exit.
// Behaviour under test: docs/operations.md, docs/configuration.md, docs/metrics.md, docs/logging.md.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import test from 'node:test';
import {
    DIRECT, E2E_DIR, expectFields, fmtLines, freePort, openStream, parseSse, POST_HEADERS, request, sleep,
    TIME_SCALE,
} from './lib/harness.js';
import { jsonResult, startScriptedUpstream } from './lib/scripted-upstream.js';
import {
    connectRefused, jsonLines, listeningPorts, runMcpeek, sampleValue, samplesOf, scrape, startWithConfig,
    tempDir, waitUntil, writeConf,
} from './lib/ops.js';

const REPO = path.resolve(E2E_DIR, '../..');
const skip = DIRECT ? 'needs mcpeek itself (MCPEEK_E2E_DIRECT=1)' : false;

const rpcBody = (id, method, params) => JSON.stringify({ jsonrpc: '2.0', id, method, ...(params ? { params } : {}) });
// JSON-RPC requests go over keep-alive connections, as MCP clients send them (so a graceful
// stop also meets a kept-alive client connection). `Connection: close` framing is covered by
// scripted_upstream.test.js.
const call = (url, id, method, params, agent, timeoutMs) => request(url, {
    method: 'POST', headers: POST_HEADERS, body: rpcBody(id, method, params), agent, timeoutMs,
});
function keepAlive(t) {
    const agent = new http.Agent({ keepAlive: true });
    t.after(() => agent.destroy());
    return agent;
}

// A config file for one instance: proxy on `port`, admin on `admin` (or off), log in dir.
function conf(dir, { port, upstream, admin, extra = [], name = 'mcpeek.conf' }) {
    return writeConf(path.join(dir, name), [
        '# written by operations.test.js',
        `listen 127.0.0.1:${port}`,
        `upstream ${upstream}`,
        `log_file ${path.join(dir, 'access.log')}`,
        `admin_listen ${admin ? `127.0.0.1:${admin}` : 'off'}`,
        'workers 2',
        ...extra,
    ]);
}

// An SSE response held open by the upstream: open(res) starts it, send(n) writes event n,
// end() finishes it.
function heldStream() {
    const h = {
        res: null,
        open(res) {
            res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
            h.res = res;
            h.send(1);
        },
        send(n) { h.res.write(`event: message\ndata: ${JSON.stringify({ jsonrpc: '2.0', method: 'notifications/message', params: { n } })}\n\n`); },
        end(id) {
            h.res.end(`event: message\ndata: ${JSON.stringify({ jsonrpc: '2.0', id, result: { content: [] } })}\n\n`);
        },
    };
    return h;
}

// Opens a POST that answers SSE through mcpeek and collects its events as they arrive.
async function openSse(t, url, id, tool) {
    const { req, res } = await openStream(url, {
        headers: POST_HEADERS, body: rpcBody(id, 'tools/call', { name: tool, arguments: {} }),
    });
    t.after(() => req.destroy());
    const s = { res, text: '', ended: false, status: res.statusCode, contentType: res.headers['content-type'] };
    res.setEncoding('utf8');
    res.on('data', (d) => { s.text += d; });
    s.done = new Promise((resolve) => {
        res.once('end', () => { s.ended = true; resolve('end'); });
        res.once('error', () => resolve('error'));
        res.once('close', () => resolve('close'));
    });
    s.events = () => parseSse(s.text);
    s.waitEvents = (n, timeoutMs = 5000) => waitUntil(() => s.events().length >= n, {
        timeoutMs, describe: () => `(waiting for ${n} SSE events, got: ${JSON.stringify(s.text)})`,
    });
    return s;
}

test('config_check_reports_every_error_with_line', { skip }, async (t) => {
    const dir = tempDir(t);
    const port = await freePort();
    const good = conf(dir, { port, upstream: 'http://127.0.0.1:1/mcp', name: 'good.conf' });
    const ok = await runMcpeek(['-t', '-c', good]);
    assert.equal(ok.code, 0, `-t on a good file: ${JSON.stringify(ok)}`);
    assert.equal(ok.stdout.trim(), 'configuration ok');

    const bad = writeConf(path.join(dir, 'bad.conf'), [
        '# line 1',
        `listen 127.0.0.1:${port}`,
        'lisen 127.0.0.1:9999',
        'upstream http://127.0.0.1:1/mcp',
        'max_body_size 4t',
        'admin_listen off',
    ]);
    const res = await runMcpeek(['-t', '-c', bad]);
    const out = res.stdout + res.stderr;
    assert.equal(res.code, 1, `-t on a bad file exits 1: ${JSON.stringify(res)}`);
    assert.doesNotMatch(out, /configuration ok/);
    const errLines = out.split('\n').filter((l) => l.startsWith(`${bad}:`));
    assert.equal(errLines.length, 2, `one line per error, got:\n${out}`);
    assert.match(errLines[0], new RegExp(`^${bad}:3: .*lisen`), out);
    assert.match(errLines[1], new RegExp(`^${bad}:5: .*max_body_size`), out);

    const shipped = await runMcpeek(['-t', '-c', path.join(REPO, 'config/mcpeek.conf')]);
    assert.equal(shipped.code, 0, `config/mcpeek.conf: ${JSON.stringify(shipped)}`);
    assert.equal(shipped.stdout.trim(), 'configuration ok');

    // A real start with the bad file fails before binding anything.
    const start = await runMcpeek(['-c', bad], { timeoutMs: 5000 });
    assert.deepEqual([start.code, start.signal], [1, null], `start with a bad file exits 1: ${JSON.stringify(start)}`);
    assert.match(start.stdout + start.stderr, new RegExp(`${bad}:3:[^]*${bad}:5:`));
    assert.equal(await connectRefused(port), true, 'the listen port of the bad file stays free');
});

test('cli_flag_overrides_file', { skip }, async (t) => {
    const dir = tempDir(t);
    const agent = keepAlive(t);
    const up = await startScriptedUpstream(t, (req, res, body) => jsonResult(res, body, { ok: true }));
    const [a, b] = [await freePort(), await freePort()];
    const file = conf(dir, { port: a, upstream: up.url });
    const m = await startWithConfig(t, file, { args: ['--listen', `127.0.0.1:${b}`], proxyPort: b });
    const r = await call(`http://127.0.0.1:${b}/mcp`, 1, 'tools/list', undefined, agent);
    assert.equal(r.status, 200);
    assert.deepEqual(r.json().result, { ok: true });
    assert.equal(await connectRefused(a), true, `the file's listen ${a} must not be bound`);
    assert.deepEqual(listeningPorts(m.pid), [b], 'only the --listen address is bound (admin off)');
});

test('reload_switches_upstream_but_open_stream_stays', { skip }, async (t) => {
    const dir = tempDir(t);
    const agent = keepAlive(t);
    const held = heldStream();
    const u1 = await startScriptedUpstream(t, (req, res, body) => {
        const msg = JSON.parse(body.toString() || '{}');
        if (msg.params?.name === 'watch') held.open(res); else jsonResult(res, body, { upstream: 'U1' });
    });
    const u2 = await startScriptedUpstream(t, (req, res, body) => jsonResult(res, body, { upstream: 'U2' }));
    const [port, admin] = [await freePort(), await freePort()];
    const url = `http://127.0.0.1:${port}/mcp`;
    const file = conf(dir, { port, admin, upstream: u1.url });
    const m = await startWithConfig(t, file, { proxyPort: port });

    assert.deepEqual((await call(url, 1, 'tools/list', undefined, agent)).json().result, { upstream: 'U1' });
    const sse = await openSse(t, url, 2, 'watch');
    assert.equal(sse.status, 200);
    assert.match(sse.contentType, /^text\/event-stream/);
    await sse.waitEvents(1);

    conf(dir, { port, admin, upstream: u2.url });
    m.signal('SIGHUP');
    const [ok] = await m.waitForDiag(/^configuration reloaded/);
    assert.match(ok.msg, new RegExp(`upstream ${u2.url.replace(/[.]/g, '\\.')}`), JSON.stringify(ok));
    assert.deepEqual(m.diags().filter((d) => d.level !== 'info'), [], 'no warning for an upstream change');

    const after = await call(url, 3, 'tools/list', undefined, agent);
    assert.deepEqual(after.json().result, { upstream: 'U2' }, 'a new exchange goes to the new upstream');
    assert.equal(u2.requests.length, 1);

    // The stream opened before the reload still relays from U1.
    held.send(2);
    await sse.waitEvents(2);
    assert.deepEqual(JSON.parse(sse.events()[1].data).params, { n: 2 });
    held.end(2);
    assert.equal(await sse.done, 'end', 'the old stream ends normally');
    assert.equal(sse.events().length, 3);
    assert.equal(u1.requests.length, 2, 'U1 saw only the exchanges started before the reload');

    const logFile = path.join(dir, 'access.log');
    const lines = await waitUntil(() => { const l = jsonLines(logFile); return l.length >= 3 && l; });
    const byId = Object.fromEntries(lines.map((l) => [l.rpc_id, l]));
    expectFields(byId[2], { status: 200, response: 'sse', sse_events: 3, tool: 'watch' }, 'stream line');
    assert.equal(byId[2].error, undefined, JSON.stringify(byId[2]));
    expectFields(byId[3], { status: 200, response: 'json', rpc_method: 'tools/list' }, 'post-reload line');
    assert.equal(lines.length, 3, fmtLines(lines));

    let { samples } = await scrape(admin);
    assert.equal(sampleValue(samples, 'mcpeek_config_reloads_total', { result: 'success' }), 1);
    assert.equal(sampleValue(samples, 'mcpeek_config_reloads_total', { result: 'failure' }), 0);

    // A broken file: one error line, the running configuration (U2) stays.
    const before = m.diags().length;
    writeConf(file, fs.readFileSync(file, 'utf8') + 'workers many\n');
    m.signal('SIGHUP');
    const [failed] = await m.waitForDiag(/reload failed/);
    assert.equal(failed.level, 'error', JSON.stringify(failed));
    assert.match(failed.msg, new RegExp(`${file}:7: .*workers`), 'the error names the file and line');
    await sleep(100);
    const newDiags = m.diags().slice(before);
    assert.equal(newDiags.length, 1, `exactly one stderr line for a failed reload, got:\n${m.stderr()}`);
    assert.deepEqual((await call(url, 4, 'tools/list', undefined, agent)).json().result, { upstream: 'U2' });
    ({ samples } = await scrape(admin));
    assert.equal(sampleValue(samples, 'mcpeek_config_reloads_total', { result: 'success' }), 1);
    assert.equal(sampleValue(samples, 'mcpeek_config_reloads_total', { result: 'failure' }), 1);
    assert.equal(sampleValue(samples, 'mcpeek_active_streams'), 0);

    // A restart-only key (admin_listen) changed: the reload applies, warns naming the key, and
    // the admin listener stays where it was.
    const otherAdmin = await freePort();
    conf(dir, { port, admin: otherAdmin, upstream: u2.url });
    m.signal('SIGHUP');
    await m.waitForDiag(/^configuration reloaded/, { count: 2 });
    const warns = m.diags().filter((d) => d.level === 'warn');
    assert.equal(warns.length, 1, m.stderr());
    assert.match(warns[0].msg, /'admin_listen'/);
    assert.equal(await connectRefused(otherAdmin), true, 'admin_listen needs a restart');
    ({ samples } = await scrape(admin));
    assert.equal(sampleValue(samples, 'mcpeek_config_reloads_total', { result: 'success' }), 2);
    assert.deepEqual((await call(url, 5, 'tools/list', undefined, agent)).json().result, { upstream: 'U2' });
    for (const d of m.diags()) {
        assert.ok(d.ts && d.level && d.msg, `every stderr line is a JSON diagnostic: ${JSON.stringify(d)}`);
    }
});

test('log_reopen_after_mv_loses_no_line', { skip }, async (t) => {
    const dir = tempDir(t);
    const agent = keepAlive(t);
    const up = await startScriptedUpstream(t, (req, res, body) => jsonResult(res, body, {}));
    const port = await freePort();
    const url = `http://127.0.0.1:${port}/mcp`;
    const m = await startWithConfig(t, conf(dir, { port, upstream: up.url }), { proxyPort: port });
    const log = path.join(dir, 'access.log');
    const N = 6;
    const M = 4;
    for (let i = 1; i <= N; i++) assert.equal((await call(url, i, 'tools/list', undefined, agent)).status, 200);
    await waitUntil(() => jsonLines(log).length >= N, { describe: () => fmtLines(jsonLines(log)) });

    fs.renameSync(log, `${log}.1`);
    m.signal('SIGUSR1');
    await m.waitForDiag(/^access log reopened/);
    assert.ok(fs.existsSync(log), 'SIGUSR1 recreated the log file');
    assert.equal(fs.statSync(log).mode & 0o777, 0o640, 'the new log file has mode 0640');

    // Concurrently, so lines from both workers land in the new file.
    const res = await Promise.all(Array.from({ length: M }, (_, k) => call(url, N + 1 + k, 'tools/list', undefined, agent)));
    assert.deepEqual(res.map((r) => r.status), Array(M).fill(200));
    await waitUntil(() => jsonLines(log).length >= M, { describe: () => fmtLines(jsonLines(log)) });
    await sleep(100);
    const old = jsonLines(`${log}.1`);
    const cur = jsonLines(log);
    assert.deepEqual(old.map((l) => l.rpc_id), Array.from({ length: N }, (_, k) => k + 1), fmtLines(old));
    assert.deepEqual(cur.map((l) => l.rpc_id).sort((x, y) => x - y),
        Array.from({ length: M }, (_, k) => N + 1 + k), fmtLines(cur));
    for (const l of [...old, ...cur]) expectFields(l, { msg: 'mcp', status: 200, rpc_method: 'tools/list' });
});

test('graceful_shutdown_finishes_in_flight_exchange', { skip }, async (t) => {
    await t.test('in_flight_json_answer_completes_then_exit_0', async (t) => {
        const dir = tempDir(t);
        const answer = { text: 'x'.repeat(20000) };
        const up = await startScriptedUpstream(t, (req, res, body) => {
            setTimeout(() => jsonResult(res, body, answer), 1500 * TIME_SCALE);
        });
        const port = await freePort();
        const m = await startWithConfig(t, conf(dir, { port, upstream: up.url }), { proxyPort: port });
        m.expectExit();
        const pending = call(`http://127.0.0.1:${port}/mcp`, 7, 'tools/call', { name: 'slow', arguments: {} }, keepAlive(t));
        await sleep(200);
        m.signal('SIGTERM');
        await m.waitForDiag(/draining/);
        await sleep(100);
        assert.equal(await connectRefused(port), true, 'no new connection is accepted while draining');
        const r = await pending.catch((e) => {
            throw new Error(`the exchange in flight at SIGTERM got no answer: ${e.message}`);
        });
        assert.equal(r.status, 200);
        assert.deepEqual(r.json(), { jsonrpc: '2.0', id: 7, result: answer });
        const ex = await m.waitExit(4000);
        assert.deepEqual([ex.code, ex.signal], [0, null], m.stderr());
        const lines = jsonLines(path.join(dir, 'access.log'));
        assert.equal(lines.length, 1, fmtLines(lines));
        expectFields(lines[0], { status: 200, rpc_id: 7, tool: 'slow', response: 'json', level: 'info' });
        assert.equal(lines[0].error, undefined, JSON.stringify(lines[0]));
    });

    await t.test('open_stream_is_ended_at_shutdown_timeout', async (t) => {
        const dir = tempDir(t);
        const held = heldStream();
        const up = await startScriptedUpstream(t, (req, res) => held.open(res));
        const port = await freePort();
        const m = await startWithConfig(t, conf(dir, { port, upstream: up.url, extra: ['shutdown_timeout 1s'] }),
            { proxyPort: port });
        m.expectExit();
        const sse = await openSse(t, `http://127.0.0.1:${port}/mcp`, 8, 'watch');
        await sse.waitEvents(1);
        const t0 = Date.now();
        m.signal('SIGTERM');
        const ex = await m.waitExit(4000);
        const ms = Date.now() - t0;
        assert.deepEqual([ex.code, ex.signal], [0, null], m.stderr());
        assert.ok(ms >= 900 && ms < 2000 * TIME_SCALE, `exit ${ms} ms after SIGTERM with shutdown_timeout 1s`);
        await sse.done;
        const lines = jsonLines(path.join(dir, 'access.log'));
        assert.equal(lines.length, 1, fmtLines(lines));
        expectFields(lines[0], { rpc_id: 8, status: 200, response: 'sse', sse_events: 1, error: 'shutdown', level: 'warn' });
    });

    await t.test('second_sigterm_stops_at_once', async (t) => {
        const dir = tempDir(t);
        const held = heldStream();
        const up = await startScriptedUpstream(t, (req, res) => held.open(res));
        const port = await freePort();
        const m = await startWithConfig(t, conf(dir, { port, upstream: up.url, extra: ['shutdown_timeout 30s'] }),
            { proxyPort: port });
        m.expectExit();
        const sse = await openSse(t, `http://127.0.0.1:${port}/mcp`, 9, 'watch');
        await sse.waitEvents(1);
        m.signal('SIGTERM');
        await m.waitForDiag(/draining/);
        await sleep(200);
        assert.equal(m.proc.exitInfo, null, 'still draining after the first SIGTERM');
        const t0 = Date.now();
        m.signal('SIGTERM');
        const ex = await m.waitExit(3000);
        const ms = Date.now() - t0;
        assert.deepEqual([ex.code, ex.signal], [0, null], m.stderr());
        assert.ok(ms < 1000 * TIME_SCALE, `exit ${ms} ms after the second SIGTERM`);
        await sse.done;
        const lines = jsonLines(path.join(dir, 'access.log'));
        assert.equal(lines.length, 1, fmtLines(lines));
        expectFields(lines[0], { rpc_id: 9, status: 200, response: 'sse', error: 'shutdown' });
    });
});

test('metrics_match_the_requests_made', { skip }, async (t) => {
    const dir = tempDir(t);
    const agent = keepAlive(t);
    const held = heldStream();
    const up = await startScriptedUpstream(t, (req, res, body) => {
        const msg = JSON.parse(body.toString());
        if (msg.method === 'tools/list') {
            res.writeHead(500, { 'Content-Type': 'application/json' });
            res.end(JSON.stringify({ jsonrpc: '2.0', id: msg.id, error: { code: -32603, message: 'boom' } }));
        } else if (msg.params?.name === 'watch') {
            held.open(res);
        } else if (msg.params?.name === 'crash') {
            req.socket.destroy();
        } else {
            jsonResult(res, body, { content: [{ type: 'text', text: 'ok' }] });
        }
    });
    const [port, admin] = [await freePort(), await freePort()];
    const url = `http://127.0.0.1:${port}/mcp`;
    const m = await startWithConfig(t, conf(dir, { port, admin, upstream: up.url }), { proxyPort: port });
    await waitUntil(() => connectRefused(admin).then((r) => !r));

    const health = await request(`http://127.0.0.1:${admin}/healthz`);
    assert.equal(health.status, 200);
    assert.equal(health.text().trim(), 'ok');
    // No request made yet: readiness comes from the TCP probe of the live upstream.
    await waitUntil(async () => (await request(`http://127.0.0.1:${admin}/readyz`)).status === 200);

    let id = 0;
    const expect = []; // [rpc_method, tool, status] per exchange made
    const send = async (method, tool, status) => {
        const params = method === 'tools/call' ? { name: tool, arguments: { q: 'é'.repeat(id) } }
            : method === 'initialize' ? { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'ops', version: '1' } }
                : undefined;
        const r = await call(url, ++id, method, params, agent, 3000)
            .catch((e) => { throw new Error(`${method} ${tool ?? ''} (id ${id}, expecting ${status}): ${e.message}`); });
        assert.equal(r.status, status, `${method} ${tool}: ${r.text()}`);
        expect.push([method, tool ?? '', String(status)]);
    };
    for (const [method, tool, status] of [['initialize', undefined, 200], ['tools/call', 'a', 200],
        ['tools/call', 'a', 200], ['tools/call', 'b', 200], ['tools/call', 'a', 200], ['tools/call', 'b', 200],
        ['tools/list', undefined, 500]]) {
        await send(method, tool, status);
    }
    const ready = await request(`http://127.0.0.1:${admin}/readyz`);
    assert.equal(ready.status, 200, 'ready after upstream answers');
    assert.equal(ready.text().trim(), 'ready');
    assert.equal(sampleValue((await scrape(admin)).samples, 'mcpeek_upstream_ready'), 1, 'the gauge says what /readyz says');

    // An open SSE stream shows in the gauge while it lasts.
    const sse = await openSse(t, url, ++id, 'watch');
    await sse.waitEvents(1);
    assert.equal(sampleValue((await scrape(admin)).samples, 'mcpeek_active_streams'), 1, 'one stream open');
    held.send(2);
    held.end(id);
    await sse.done;
    expect.push(['tools/call', 'watch', '200']);

    const log = path.join(dir, 'access.log');
    const version = (await runMcpeek(['-V'])).stdout.split(' ')[1];
    // Scrapes and checks every family against `expect` and the log file.
    const checkScrape = async (upstreamErrors) => {
        const lines = await waitUntil(() => { const l = jsonLines(log); return l.length >= expect.length && l; },
            { describe: () => fmtLines(jsonLines(log)) });
        assert.equal(lines.length, expect.length, fmtLines(lines));
        const { samples, text, headers } = await scrape(admin);
        assert.match(headers['content-type'], /^text\/plain; version=0\.0\.4/);
        const val = (name, labels) => sampleValue(samples, name, labels);

        // mcpeek_requests_total: exactly the series caused here.
        const want = {};
        for (const [rpc_method, tool, status] of expect) {
            const k = JSON.stringify({ rpc_method, tool, status });
            want[k] = (want[k] || 0) + 1;
        }
        const got = {};
        for (const [, l, v] of samplesOf(samples, 'mcpeek_requests_total')) {
            got[JSON.stringify({ rpc_method: l.rpc_method, tool: l.tool, status: l.status })] = v;
        }
        assert.deepEqual(got, want, `mcpeek_requests_total:\n${text}`);

        // Histogram: _count per method, +Inf bucket = _count, buckets cumulative, _sum = log durations.
        const perMethod = {};
        for (const [method] of expect) perMethod[method] = (perMethod[method] || 0) + 1;
        for (const [method, n] of Object.entries(perMethod)) {
            assert.equal(val('mcpeek_request_duration_seconds_count', { rpc_method: method }), n, `${method} _count`);
            assert.equal(val('mcpeek_request_duration_seconds_bucket', { rpc_method: method, le: '+Inf' }), n);
            const buckets = samplesOf(samples, 'mcpeek_request_duration_seconds_bucket', { rpc_method: method })
                .map(([, l, v]) => [Number(l.le), v]).sort((x, y) => x[0] - y[0]);
            assert.equal(buckets.length, 16, `${method}: 16 buckets`);
            for (let i = 1; i < buckets.length; i++) assert.ok(buckets[i][1] >= buckets[i - 1][1], `${method} buckets cumulative`);
            const sum = val('mcpeek_request_duration_seconds_sum', { rpc_method: method });
            const logSum = lines.filter((l) => l.rpc_method === method).reduce((a, l) => a + l.duration_ms, 0) / 1000;
            assert.ok(Math.abs(sum - logSum) < 0.005 * n + 0.001, `${method} _sum ${sum} vs log durations ${logSum}`);
        }
        assert.deepEqual(Object.keys(perMethod).sort(),
            [...new Set(samplesOf(samples, 'mcpeek_request_duration_seconds_count').map(([, l]) => l.rpc_method))].sort());

        // Other families.
        const bytesIn = val('mcpeek_bytes_in_total');
        const bytesOut = val('mcpeek_bytes_out_total');
        assert.ok(bytesIn > 0 && bytesOut > 0, `bytes in ${bytesIn}, out ${bytesOut}`);
        assert.equal(bytesIn, lines.reduce((a, l) => a + l.bytes_in, 0), 'bytes_in_total = sum of logged bytes_in');
        assert.equal(bytesOut, lines.reduce((a, l) => a + l.bytes_out, 0), 'bytes_out_total = sum of logged bytes_out');
        assert.equal(val('mcpeek_log_lines_total'), lines.length, 'log_lines_total = lines in the file');
        assert.equal(val('mcpeek_active_streams'), 0, 'no stream open any more');
        const errs = Object.fromEntries(samplesOf(samples, 'mcpeek_upstream_errors_total').map(([, l, v]) => [l.kind, v]));
        assert.deepEqual(errs, { connect: 0, timeout: 0, reset: 0, tls: 0, other: 0, dns: 0, ...upstreamErrors }, text);
        assert.equal(val('mcpeek_config_reloads_total', { result: 'success' }), 0);
        assert.equal(val('mcpeek_config_reloads_total', { result: 'failure' }), 0);
        assert.equal(val('mcpeek_workers'), 2);
        const info = samplesOf(samples, 'mcpeek_build_info');
        assert.equal(info.length, 1, text);
        assert.equal(info[0][2], 1);
        assert.equal(info[0][1].version, version, `build_info version vs mcpeek -V (${version})`);
    };
    await checkScrape({});

    // The upstream drops the connection without answering: mcpeek answers 502 itself.
    await send('tools/call', 'crash', 502);
    await checkScrape({ reset: 1 });
    assert.ok(m.pid);

    await t.test('readyz_503_when_the_upstream_is_dead', async (t) => {
        const dir2 = tempDir(t);
        const agent = keepAlive(t);
        const [p2, a2, dead] = [await freePort(), await freePort(), await freePort()];
        await startWithConfig(t, conf(dir2, { port: p2, admin: a2, upstream: `http://127.0.0.1:${dead}/mcp` }),
            { proxyPort: p2 });
        await waitUntil(() => connectRefused(a2).then((r) => !r));
        assert.equal((await request(`http://127.0.0.1:${a2}/healthz`)).status, 200);
        assert.equal((await request(`http://127.0.0.1:${a2}/readyz`)).status, 503);
        const r = await call(`http://127.0.0.1:${p2}/mcp`, 1, 'tools/list', undefined, agent, 3000)
            .catch((e) => { throw new Error(`request to a dead upstream (expecting 502): ${e.message}`); });
        assert.equal(r.status, 502);
        assert.equal((await request(`http://127.0.0.1:${a2}/readyz`)).status, 503, 'a failed exchange is no readiness');
        const s2 = (await scrape(a2)).samples;
        assert.equal(sampleValue(s2, 'mcpeek_upstream_errors_total', { kind: 'connect' }), 1);
        assert.equal(sampleValue(s2, 'mcpeek_requests_total', { rpc_method: 'tools/list', tool: '', status: '502' }), 1);
        assert.equal(sampleValue(s2, 'mcpeek_upstream_ready'), 0, 'the gauge says what /readyz says');
    });
});

test('log_lines_that_cannot_be_written_are_counted', { skip }, async (t) => {
    // /dev/full takes the open and refuses every write (ENOSPC): the lines are lost, and the
    // metric the McpeekLogWriteFailures alert watches must say how many.
    const dir = tempDir(t);
    const upstream = await startScriptedUpstream(t, (req, res, body) => jsonResult(res, body, {}));
    const [port, admin] = [await freePort(), await freePort()];
    await startWithConfig(t, writeConf(path.join(dir, 'mcpeek.conf'), [
        `listen 127.0.0.1:${port}`, `upstream ${upstream.url}`, 'log_file /dev/full',
        `admin_listen 127.0.0.1:${admin}`, 'workers 2',
    ]), { proxyPort: port });
    const agent = keepAlive(t);
    for (let id = 1; id <= 3; id++) {
        assert.equal((await call(`http://127.0.0.1:${port}/mcp`, id, 'ping', undefined, agent)).status, 200);
    }
    let last = null;
    await waitUntil(async () => (last = sampleValue((await scrape(admin)).samples,
        'mcpeek_log_write_failures_total')) === 3, { describe: () => `(failures counted: ${last})` });
    assert.equal(sampleValue((await scrape(admin)).samples, 'mcpeek_log_lines_total'), 0);
});

test('admin_listen_off_binds_no_admin_port', { skip }, async (t) => {
    const dir = tempDir(t);
    const agent = keepAlive(t);
    const up = await startScriptedUpstream(t, (req, res, body) => jsonResult(res, body, {}));
    const [port, admin] = [await freePort(), await freePort()];
    const file = conf(dir, { port, admin, upstream: up.url });
    const m = await startWithConfig(t, file, { args: ['--admin-listen', 'off'], proxyPort: port });
    assert.equal((await call(`http://127.0.0.1:${port}/mcp`, 1, 'tools/list', undefined, agent)).status, 200);
    assert.equal(await connectRefused(admin), true, 'the admin port of the file is not bound');
    assert.deepEqual(listeningPorts(m.pid), [port], 'mcpeek listens on the proxy port only');
});
