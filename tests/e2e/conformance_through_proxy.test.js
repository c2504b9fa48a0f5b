// The MCP conformance suite run against server-everything directly and through mcpeek: every
// scenario that passes directly must pass through the proxy too (mcpeek must be invisible).
// Not all scenarios pass directly with this server version; that is the server's business.

import assert from 'node:assert/strict';
import path from 'node:path';
import test from 'node:test';
import { E2E_DIR, sleep, spawnTracked, startEverything, startMcpeek } from './lib/harness.js';

async function runConformance(t, url) {
    const cli = path.join(E2E_DIR, 'node_modules/@modelcontextprotocol/conformance/dist/index.js');
    const proc = spawnTracked(t, 'conformance', process.execPath, [cli, 'server', '--url', url], { cwd: E2E_DIR });
    const deadline = Date.now() + 45000;
    while (proc.exitInfo === null) {
        if (Date.now() > deadline) throw new Error(`conformance against ${url} still running after 45 s`);
        await sleep(50);
    }
    const out = proc.output();
    const summary = out.slice(out.indexOf('=== SUMMARY ==='));
    const scenarios = new Map();
    for (const m of summary.matchAll(/^([✓✗]) ([\w-]+): (\d+) passed, (\d+) failed/gmu)) {
        scenarios.set(m[2], { ok: m[1] === '✓', passed: Number(m[3]), failed: Number(m[4]) });
    }
    if (scenarios.size === 0) throw new Error(`no SUMMARY lines from conformance against ${url}:\n${out}`);
    return { scenarios, out };
}

const list = (m, ok) => [...m].filter(([, v]) => v.ok === ok).map(([k]) => k);

test('conformance_scenarios_passing_directly_also_pass_through_proxy', async (t) => {
    const directServer = await startEverything(t);
    const direct = await runConformance(t, directServer.url);

    const proxiedServer = await startEverything(t);
    const proxy = await startMcpeek(t, proxiedServer.url);
    const proxied = await runConformance(t, proxy.url);

    const directPass = list(direct.scenarios, true);
    const proxiedPass = list(proxied.scenarios, true);
    const lost = directPass.filter((name) => !proxiedPass.includes(name));
    const report = `passing directly (${directPass.length}): ${directPass.join(', ')}\n` +
        `passing through mcpeek (${proxiedPass.length}): ${proxiedPass.join(', ')}\n` +
        `lost through mcpeek: ${lost.join(', ') || '(none)'}`;
    for (const line of report.split('\n')) t.diagnostic(line);
    assert.ok(directPass.length > 0, `nothing passes directly; the suite itself is broken:\n${direct.out}`);
    assert.deepEqual(lost, [], `${report}\n--- conformance output through mcpeek ---\n${proxied.out}`);
    // Check-level: a scenario passing with fewer checks through the proxy is a regression too.
    for (const [name, d] of direct.scenarios) {
        const p = proxied.scenarios.get(name);
        assert.ok(p, `scenario ${name} missing through mcpeek\n${report}`);
        assert.ok(p.passed >= d.passed,
            `${name}: ${d.passed} checks pass directly, ${p.passed} through mcpeek\n${proxied.out}`);
    }
    if (proxy.direct) return;
    const lines = await proxy.waitForLogs(10);
    for (const l of lines) {
        assert.equal(typeof l.status, 'number', `every log line has a status: ${JSON.stringify(l)}`);
    }
});
