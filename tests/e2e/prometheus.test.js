// The shipped Grafana dashboard (config/grafana/mcpeek.json) and alert rules
// (config/prometheus/mcpeek-rules.yml) against a real Prometheus scraping mcpeek's admin
// listener while traffic flows through mcpeek to a scripted upstream.
//
// Behaviour under test: docs/metrics.md (the dashboard and alerts sections). Every expression
// of the dashboard and of the rules must be accepted by Prometheus' query API, the rules file
// must load and evaluate without error, and the request-rate and latency panels must show the
// traffic sent. Needs the Debian `prometheus` binary (scripts/deps --test installs it); the test
// is skipped, saying so, only when that binary is missing.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import {
    DIRECT, E2E_DIR, POST_HEADERS, freePort, request, sleep, spawnTracked, startMcpeek, waitForPort,
} from './lib/harness.js';
import { jsonResult, startScriptedUpstream } from './lib/scripted-upstream.js';

const ROOT = path.resolve(E2E_DIR, '../..');
const DASHBOARD = path.join(ROOT, 'config/grafana/mcpeek.json');
const RULES = path.join(ROOT, 'config/prometheus/mcpeek-rules.yml');
const PROMETHEUS = process.env.PROMETHEUS_BIN || '/usr/bin/prometheus';
// The range Grafana's $__rate_interval would become at a 1 s scrape interval, and the
// "All" value of the instance variable.
const RATE_INTERVAL = '10s';

const skip = !fs.existsSync(PROMETHEUS)
    ? `prometheus binary not found at ${PROMETHEUS} (install the Debian package: scripts/deps --test)`
    : DIRECT ? 'MCPEEK_E2E_DIRECT=1: no mcpeek, no admin listener to scrape' : false;

// Panels whose queries must return data once traffic flowed: request rates and latencies.
const MUST_HAVE_DATA = [
    'Requests / s', 'Requests by method', 'Tool calls by tool', 'Requests by HTTP status',
    'Request latency p50 / p95 / p99', 'p99 latency by method', 'Mean latency by method',
];

// Every PromQL expression of the dashboard, with Grafana's variables replaced.
function dashboardQueries() {
    const dash = JSON.parse(fs.readFileSync(DASHBOARD, 'utf8'));
    const out = [];
    const walk = (panels) => {
        for (const p of panels) {
            if (p.panels) walk(p.panels);
            for (const t of p.targets || []) {
                out.push({
                    panel: p.title, legend: t.legendFormat,
                    expr: t.expr.replaceAll('$__rate_interval', RATE_INTERVAL).replaceAll('$instance', '.*'),
                });
            }
        }
    };
    walk(dash.panels);
    for (const v of dash.templating.list) {
        if (v.type === 'query') out.push({ panel: `variable ${v.name}`, expr: varQuery(v.definition) });
    }
    return out;
}

// label_values(metric, label) (a Grafana variable query) as the PromQL it stands for.
function varQuery(def) {
    const m = /^label_values\((\w+),\s*(\w+)\)$/.exec(def);
    assert.ok(m, `unexpected variable query ${def}`);
    return `count by (${m[2]}) (${m[1]})`;
}

async function promGet(base, pathAndQuery) {
    const res = await fetch(`${base}${pathAndQuery}`);
    const body = await res.json();
    return { status: res.status, body };
}

async function query(base, expr) {
    return promGet(base, `/api/v1/query?query=${encodeURIComponent(expr)}`);
}

// Answers like an MCP server: errors for tool "broken", isError for "failing", SSE for "stream".
function upstreamHandler(req, res, body) {
    let msg = {};
    try { msg = JSON.parse(body.toString('utf8')); } catch { /* not JSON */ }
    const tool = msg.params && msg.params.name;
    if (tool === 'broken') {
        const out = JSON.stringify({ jsonrpc: '2.0', id: msg.id, error: { code: -32602, message: 'Unknown tool: broken' } });
        res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(out) });
        res.end(out);
    } else if (tool === 'stream') {
        res.writeHead(200, { 'Content-Type': 'text/event-stream' });
        res.write(`data: ${JSON.stringify({ jsonrpc: '2.0', method: 'notifications/progress', params: { progress: 1 } })}\n\n`);
        setTimeout(() => {
            res.end(`data: ${JSON.stringify({ jsonrpc: '2.0', id: msg.id, result: { content: [] } })}\n\n`);
        }, 30);
    } else if (tool === 'failing') {
        jsonResult(res, body, { content: [{ type: 'text', text: 'no' }], isError: true });
    } else {
        jsonResult(res, body, { content: [{ type: 'text', text: 'ok' }] });
    }
}

test('dashboard and alert rules evaluate against a real Prometheus scraping mcpeek', { skip, timeout: 90000 }, async (t) => {
    const upstream = await startScriptedUpstream(t, upstreamHandler);
    const adminPort = await freePort();
    const mcpeek = await startMcpeek(t, upstream.url, { adminPort });
    await waitForPort(adminPort);

    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mcpeek-prom-'));
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
    const promPort = await freePort();
    fs.writeFileSync(path.join(dir, 'prometheus.yml'), [
        'global:',
        '  scrape_interval: 1s',
        '  evaluation_interval: 1s',
        'rule_files:',
        `  - ${JSON.stringify(RULES)}`,
        'scrape_configs:',
        '  - job_name: mcpeek',
        '    static_configs:',
        `      - targets: ["127.0.0.1:${adminPort}"]`,
        '',
    ].join('\n'));
    // Registered with t: stopped at teardown whether the test passed or not.
    const prom = spawnTracked(t, 'prometheus', PROMETHEUS, [
        `--config.file=${path.join(dir, 'prometheus.yml')}`,
        `--storage.tsdb.path=${path.join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${promPort}`,
        '--log.level=warn',
    ]);
    await waitForPort(promPort, { proc: prom, timeoutMs: 20000 });
    const base = `http://127.0.0.1:${promPort}`;

    // Traffic through mcpeek until the end of the test: plain calls, errors, SSE answers.
    let stop = false;
    let sent = 0;
    let trafficError = null;
    const calls = ['search', 'search', 'broken', 'failing', 'stream'];
    const traffic = (async () => {
        for (let i = 0; !stop; i++) {
            const body = i % 6 === 5
                ? JSON.stringify({ jsonrpc: '2.0', id: i, method: 'tools/list' })
                : JSON.stringify({ jsonrpc: '2.0', id: i, method: 'tools/call', params: { name: calls[i % calls.length], arguments: {} } });
            const res = await request(mcpeek.url, { method: 'POST', headers: POST_HEADERS, body });
            assert.equal(res.status, 200, `request ${i}: expected 200, got ${res.status}: ${res.text()}`);
            sent += 1;
            await sleep(20);
        }
    })().catch((e) => { trafficError = e; });
    t.after(async () => { stop = true; await traffic; });

    // Scrapes succeed and have seen traffic over several intervals.
    const deadline = Date.now() + 40000;
    for (;;) {
        if (trafficError) throw trafficError;
        const r = await query(base, 'sum(count_over_time(mcpeek_requests_total{job="mcpeek"}[1m]))');
        const up = await query(base, 'up{job="mcpeek"}');
        const scrapes = r.body.data?.result?.[0]?.value?.[1];
        if (up.body.data?.result?.[0]?.value?.[1] === '1' && Number(scrapes) >= 6) break;
        if (Date.now() > deadline) {
            assert.fail(`Prometheus did not scrape mcpeek (up: ${JSON.stringify(up.body)}, ` +
                `samples: ${JSON.stringify(r.body)})\n--- prometheus ---\n${prom.output()}`);
        }
        await sleep(500);
    }
    assert.equal(trafficError, null);
    assert.ok(sent > 20, `expected traffic to flow, sent ${sent} requests`);

    // The rules file loaded (every rule of it) and every rule evaluated without error.
    const ruleText = fs.readFileSync(RULES, 'utf8');
    const nRules = (ruleText.match(/^\s*- (alert|record):/gm) || []).length;
    assert.ok(nRules >= 5, `expected the rules file to hold rules, found ${nRules}`);
    let rules;
    for (;;) {
        const r = await promGet(base, '/api/v1/rules');
        assert.equal(r.body.status, 'success', JSON.stringify(r.body));
        rules = r.body.data.groups.flatMap((g) => g.rules);
        if (rules.length === nRules && rules.every((x) => x.lastEvaluation && !x.lastEvaluation.startsWith('0001'))) break;
        if (Date.now() > deadline + 10000) assert.fail(`rules not loaded/evaluated: ${JSON.stringify(r.body)}\n${prom.output()}`);
        await sleep(500);
    }
    for (const r of rules) {
        assert.equal(r.health, 'ok', `rule ${r.name}: health ${r.health}, error ${r.lastError}`);
    }
    // Nothing is wrong here, so the alerts that see mcpeek must be quiet.
    for (const name of ['McpeekDown', 'McpeekAbsent', 'McpeekUpstreamNotReady', 'McpeekLogWriteFailures']) {
        const r = rules.find((x) => x.name === name);
        assert.ok(r, `rule ${name} missing from the loaded rules`);
        assert.equal(r.state, 'inactive', `${name} should be inactive, is ${r.state}: ${JSON.stringify(r.alerts)}`);
    }

    // Every expression parses and evaluates: the dashboard's and the rules'.
    const exprs = [...dashboardQueries(), ...rules.map((r) => ({ panel: `rule ${r.name}`, expr: r.query }))];
    const problems = [];
    const results = new Map();
    for (const q of exprs) {
        const r = await query(base, q.expr);
        if (r.body.status !== 'success') {
            problems.push(`${q.panel}: ${q.expr}\n    -> ${r.body.errorType}: ${r.body.error}`);
            continue;
        }
        results.set(q, r.body.data.result);
    }
    assert.deepEqual(problems, [], `expressions Prometheus refused:\n${problems.join('\n')}`);

    // The traffic shows up in the request-rate and latency panels, with real values.
    for (const title of MUST_HAVE_DATA) {
        const qs = [...results.keys()].filter((q) => q.panel === title);
        assert.ok(qs.length > 0, `panel "${title}" not found in the dashboard`);
        for (const q of qs) {
            const res = results.get(q);
            const values = res.map((s) => Number(s.value[1])).filter((v) => Number.isFinite(v) && v > 0);
            assert.ok(values.length > 0, `panel "${title}" (${q.legend}): expected a positive value, ` +
                `got ${JSON.stringify(res)} for ${q.expr}`);
        }
    }
    // The series carry the labels the legends use.
    const byTool = results.get([...results.keys()].find((q) => q.panel === 'Tool calls by tool'));
    const tools = byTool.map((s) => s.metric.tool).sort();
    for (const tool of ['broken', 'failing', 'search', 'stream']) {
        assert.ok(tools.includes(tool), `expected tool ${tool} in ${JSON.stringify(tools)}`);
    }
    const instVar = results.get([...results.keys()].find((q) => q.panel === 'variable instance'));
    assert.deepEqual(instVar.map((s) => s.metric.instance), [`127.0.0.1:${adminPort}`]);
    const ready = results.get([...results.keys()].find((q) => q.panel === 'Upstream ready'));
    assert.equal(ready[0]?.value[1], '1', `expected the upstream ready, got ${JSON.stringify(ready)}`);

    stop = true;
    await traffic;
    assert.equal(trafficError, null);
});
