// TLS end to end: mcpeek's HTTPS listener (the official SDK client over HTTPS, protocol
// versions, certificate reload on SIGHUP, junk and half-done handshakes) and its HTTPS
// upstream side (private CA, failed verification -> 502 + "upstream_tls", mutual TLS, host
// header, verification off). Certificates are made per test with the openssl CLI
// (lib/certs.js). Processes come from lib/harness.js, which stops them at teardown and fails
// the test on a crash or a sanitizer report in mcpeek's stderr (ASan/LSan/UBSan builds).
// See docs/tls.md.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import tls from 'node:tls';
import test from 'node:test';
import {
    DIRECT, E2E_DIR, expectFields, fmtLines, freePort, POST_HEADERS, request, sleep, spawnTracked,
    startEverything, startMcpeek,
} from './lib/harness.js';
import { jsonResult, startScriptedUpstream } from './lib/scripted-upstream.js';
import {
    captureClientHello, fingerprintOf, httpsRequest, makePki, peerCertificate, rawProbe, sClient,
    startHttpsUpstream,
} from './lib/certs.js';

const skipDirect = DIRECT ? 'mcpeek-only behaviour (MCPEEK_E2E_DIRECT=1)' : false;

const rpcBody = (id, method = 'tools/call', params = { name: 'probe', arguments: {} }) =>
    JSON.stringify({ jsonrpc: '2.0', id, method, params });

const JSON_HEADERS = { 'Content-Type': 'application/json', Accept: 'application/json, text/event-stream' };

// A POST through mcpeek's plain listener from a keep-alive client (as MCP clients are).
async function post(url, body) {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
        return await request(url, { method: 'POST', headers: POST_HEADERS, body, agent });
    } finally {
        agent.destroy();
    }
}

async function waitFor(what, fn, timeoutMs = 5000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        const v = await fn();
        if (v) return v;
        if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
        await sleep(25);
    }
}

// mcpeek with a plain listener (the harness's) plus an HTTPS one. Returns the harness object
// with tlsPort and tlsUrl added.
async function startTlsMcpeek(t, upstreamUrl, { cert, key, args = [] } = {}) {
    const tlsPort = await freePort();
    const certArgs = cert ? ['--tls-cert', cert, '--tls-key', key] : [];
    const proxy = await startMcpeek(t, upstreamUrl,
        { args: ['--listen', `127.0.0.1:${tlsPort} tls`, ...certArgs, ...args] });
    // Not waitForPort: a bare TCP connect would count as a failed handshake on stderr, which
    // some tests look for. mcpeek binds every listener before it prints these lines.
    await waitFor(`mcpeek listening on ${tlsPort} (tls)`,
        () => proxy.proc.stderrText().includes(`127.0.0.1:${tlsPort} (tls)`), 10000);
    proxy.tlsPort = tlsPort;
    proxy.tlsUrl = `https://127.0.0.1:${tlsPort}${new URL(upstreamUrl).pathname}`;
    return proxy;
}

// ---- 1. the official SDK client over HTTPS ---------------------------------------------

// Runs in a child node so NODE_EXTRA_CA_CERTS (read at start-up only) makes fetch trust the
// private CA, the way a user would point a Node MCP client at it. Prints one JSON line.
const SDK_CLIENT = `
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
const out = {};
try {
    const client = new Client({ name: 'mcpeek-e2e-tls', version: '1.0.0' });
    const transport = new StreamableHTTPClientTransport(new URL(process.env.MCP_URL));
    await client.connect(transport);
    out.sessionId = transport.sessionId;
    out.tools = (await client.listTools()).tools.map((x) => x.name);
    const echo = await client.callTool({ name: 'echo', arguments: { message: 'hello over TLS' } });
    out.echo = echo.content[0].text;
    await transport.terminateSession();
    await client.close();
} catch (e) {
    out.error = String(e && e.stack || e) + (e && e.cause ? '\\ncause: ' + (e.cause.stack || e.cause) : '');
}
process.stdout.write(JSON.stringify(out) + '\\n');
`;

test('tls_sdk_client_over_https_through_mcpeek_to_server_everything', { skip: skipDirect }, async (t) => {
    const pki = makePki(t);
    const upstream = await startEverything(t);
    const proxy = await startTlsMcpeek(t, upstream.url, pki.server);

    const child = spawnTracked(t, 'sdk-client', process.execPath,
        ['--input-type=module', '-e', SDK_CLIENT],
        { cwd: E2E_DIR, env: { ...process.env, NODE_EXTRA_CA_CERTS: pki.ca, MCP_URL: proxy.tlsUrl } });
    const code = await new Promise((resolve) => {
        if (child.exitCode !== null) resolve(child.exitCode);
        else child.once('exit', (c) => resolve(c));
    });
    const last = child.output().trim().split('\n').pop();
    let res;
    try { res = JSON.parse(last); } catch { assert.fail(`SDK client printed no result (exit ${code}):\n${child.output()}`); }
    assert.equal(res.error, undefined, `SDK client over HTTPS failed: ${res.error}`);
    assert.ok(res.sessionId, 'a session id came back over HTTPS');
    assert.ok(res.tools.includes('echo'), `tools/list over HTTPS: ${res.tools.join(', ')}`);
    assert.equal(res.echo, 'Echo: hello over TLS');

    // A plain-HTTP exchange on the other listener, to contrast the tls field.
    await post(proxy.url, rpcBody('plain-1', 'ping', {}));

    const lines = await proxy.waitForLogs(1, (l) => l.rpc_id === 'plain-1');
    const tlsLines = lines.filter((l) => l.msg === 'mcp' && l.rpc_id !== 'plain-1');
    for (const method of ['initialize', 'tools/list', 'tools/call']) {
        assert.ok(tlsLines.some((l) => l.rpc_method === method),
            `a log line for ${method}; all lines:\n${fmtLines(lines)}`);
    }
    for (const l of tlsLines) expectFields(l, { tls: 'TLSv1.3' }, 'HTTPS exchange');
    const call = tlsLines.find((l) => l.rpc_method === 'tools/call');
    expectFields(call, { status: 200, tool: 'echo', tls: 'TLSv1.3' }, 'tools/call over HTTPS');
    const plain = lines.find((l) => l.rpc_id === 'plain-1');
    assert.equal(plain.tls, undefined, `plain HTTP line has no tls field: ${JSON.stringify(plain)}`);
});

// ---- 2. HTTPS upstream: verification ---------------------------------------------------

// POSTs through mcpeek's plain listener and checks the 502 mcpeek makes for an upstream whose
// TLS failed: JSON-RPC error carrying the request id, and a log line with the error.
async function expectUpstreamTlsFailure(proxy, ids, wantErrors = ['upstream_tls']) {
    for (const id of ids) {
        const res = await post(proxy.url, rpcBody(id));
        assert.equal(res.status, 502, `status for id ${JSON.stringify(id)}: ${res.status} ${res.text()}`);
        assert.match(res.headers['content-type'] || '', /^application\/json/);
        let body;
        try { body = res.json(); } catch { assert.fail(`502 body is not JSON: ${JSON.stringify(res.text())}`); }
        assert.equal(body.jsonrpc, '2.0', `body: ${res.text()}`);
        assert.deepEqual(body.id, id, `the error carries the request id: ${res.text()}`);
        assert.equal(body.error?.code, -32000, `error.code: ${res.text()}`);
        assert.equal(typeof body.error?.message, 'string', `error.message: ${res.text()}`);
    }
    const lines = await proxy.expectLogCount(ids.length);
    for (const [i, id] of ids.entries()) {
        expectFields(lines[i], { status: 502, rpc_error_code: -32000 }, 'upstream TLS failure');
        assert.deepEqual(lines[i].rpc_id, id);
        assert.ok(wantErrors.includes(lines[i].error),
            `log error expected ${wantErrors.join(' or ')}, got ${JSON.stringify(lines[i].error)}: ` +
            JSON.stringify(lines[i]));
    }
    return lines;
}

test('tls_upstream_https_with_private_ca_file_and_host_header', { skip: skipDirect }, async (t) => {
    const pki = makePki(t);
    const up = await startHttpsUpstream(t, pki.server);
    const proxy = await startMcpeek(t, up.localhostUrl, {
        args: ['--upstream-ca-file', pki.ca],
    });
    for (const id of [1, 'two']) {
        const res = await post(proxy.url, rpcBody(id));
        assert.equal(res.status, 200, `status: ${res.status} ${res.text()}`);
        assert.deepEqual(res.json().id, id);
        assert.equal(res.json().result.tls, 'TLSv1.3', 'mcpeek spoke TLS 1.3 to the upstream');
    }
    assert.equal(up.requests.length, 2);
    assert.deepEqual(JSON.parse(up.requests[0].body).id, 1, 'body forwarded as is');
    const lines = await proxy.expectLogCount(2);
    for (const l of lines) {
        expectFields(l, { status: 200 }, 'HTTPS upstream');
        assert.equal(l.error, undefined, `no error: ${JSON.stringify(l)}`);
        // tls describes the client side of the exchange: plain here.
        assert.equal(l.tls, undefined, `client side was plain HTTP: ${JSON.stringify(l)}`);
    }

    // upstream_host_header: the Host header changes, TLS still verifies the URL's host name.
    const up2 = await startHttpsUpstream(t, pki.server);
    const proxy2 = await startMcpeek(t, up2.localhostUrl, {
        args: ['--upstream-ca-file', pki.ca, '--upstream-host-header', 'mcp.internal.example'],
    });
    const res = await post(proxy2.url, rpcBody(3));
    assert.equal(res.status, 200, `status with host header: ${res.status} ${res.text()}`);
    assert.equal(up2.requests[0].headers.host, 'mcp.internal.example', 'Host header sent upstream');
    await proxy2.expectLogCount(1);
});

test('tls_upstream_unknown_ca_is_502_upstream_tls', { skip: skipDirect }, async (t) => {
    const pki = makePki(t);
    const up = await startHttpsUpstream(t, pki.server);
    const proxy = await startMcpeek(t, up.localhostUrl); // system trust store only
    await expectUpstreamTlsFailure(proxy, ['unknown-ca-1', 2]);
    assert.equal(up.requests.length, 0, 'no request reached the untrusted upstream');
});

test('tls_upstream_wrong_host_certificate_is_502_upstream_tls', { skip: skipDirect }, async (t) => {
    const pki = makePki(t);
    const up = await startHttpsUpstream(t, pki.wronghost);
    const proxy = await startMcpeek(t, up.localhostUrl, { args: ['--upstream-ca-file', pki.ca] });
    await expectUpstreamTlsFailure(proxy, ['wrong-host-1', 2]);
    assert.equal(up.requests.length, 0, 'no request reached the wrong-host upstream');
});

test('tls_upstream_expired_certificate_is_502_upstream_tls', { skip: skipDirect }, async (t) => {
    const pki = makePki(t);
    const up = await startHttpsUpstream(t, pki.expired);
    const proxy = await startMcpeek(t, up.localhostUrl, { args: ['--upstream-ca-file', pki.ca] });
    await expectUpstreamTlsFailure(proxy, ['expired-1', 2]);
    assert.equal(up.requests.length, 0, 'no request reached the expired upstream');
});

test('tls_upstream_verify_off_accepts_any_certificate_and_warns_at_start', { skip: skipDirect }, async (t) => {
    const pki = makePki(t);
    const up = await startHttpsUpstream(t, pki.expired);
    const proxy = await startMcpeek(t, up.localhostUrl, { args: ['--upstream-tls-verify', 'off'] });
    const res = await post(proxy.url, rpcBody(5));
    assert.equal(res.status, 200, `verify off: ${res.status} ${res.text()}`);
    assert.deepEqual(res.json().id, 5);
    await proxy.expectLogCount(1);
    assert.match(proxy.proc.stderrText(), /upstream_tls_verify is off/,
        `a warning at start when verification is off; stderr:\n${proxy.proc.stderrText()}`);
});

// ---- 3. mutual TLS to the upstream -----------------------------------------------------

test('tls_upstream_mutual_tls_client_certificate', { skip: skipDirect }, async (t) => {
    const pki = makePki(t);
    const mtls = { ...pki.server, requestCert: true, rejectUnauthorized: true, ca: pki.caPem };

    const up = await startHttpsUpstream(t, mtls);
    const proxy = await startMcpeek(t, up.localhostUrl, {
        args: ['--upstream-ca-file', pki.ca, '--upstream-tls-cert', pki.client.cert,
            '--upstream-tls-key', pki.client.key],
    });
    const res = await post(proxy.url, rpcBody('mtls-1'));
    assert.equal(res.status, 200, `with a client certificate: ${res.status} ${res.text()}`);
    assert.equal(up.requests[0].clientCertSubject, 'mcpeek client', 'the upstream saw mcpeek\'s client cert');
    const [line] = await proxy.expectLogCount(1);
    expectFields(line, { status: 200 }, 'mTLS ok');

    // Without a client certificate the upstream refuses the handshake. TLS 1.3 reports it
    // after the client's Finished, as an alert libcurl reads with the answer: mcpeek tells it
    // from a plain reset by OpenSSL's words (logging.md, libcurl result codes), and stderr
    // carries them.
    const up2 = await startHttpsUpstream(t, mtls);
    const proxy2 = await startMcpeek(t, up2.localhostUrl, { args: ['--upstream-ca-file', pki.ca] });
    await expectUpstreamTlsFailure(proxy2, ['mtls-missing-1', 'mtls-missing-2'], ['upstream_tls']);
    assert.match(proxy2.proc.stderrText(), /alert certificate required|certificate required/i,
        `stderr names the refusal: ${proxy2.proc.stderrText()}`);
    assert.equal(up2.requests.length, 0, 'no request reached the upstream without a client cert');
    assert.ok(up2.tlsErrors.length >= 1, 'the upstream saw a failed handshake');
});

// ---- 4. protocol versions --------------------------------------------------------------

test('tls_front_end_refuses_tls_1_1_and_accepts_1_2_and_1_3', { skip: skipDirect }, async (t) => {
    const pki = makePki(t);
    const up = await startScriptedUpstream(t, (req, res, body) => jsonResult(res, body, { ok: 1 }));
    const proxy = await startTlsMcpeek(t, up.url, pki.server);

    // SECLEVEL=0 so OpenSSL 3's client really offers TLS 1.1 rather than refusing locally.
    const old = await sClient(proxy.tlsPort, ['-tls1_1', '-cipher', 'DEFAULT@SECLEVEL=0', '-servername', 'localhost']);
    // (s_client prints "Protocol : TLSv1.1" even for a failed attempt: look at the cipher.)
    assert.notEqual(old.code, 0, `TLS 1.1 handshake must fail:\n${old.out}`);
    assert.doesNotMatch(old.out, /Cipher is (?!\(NONE\))/, `a TLS 1.1 session was established:\n${old.out}`);
    assert.match(old.out, /protocol version|unsupported protocol|no protocols available/i,
        `refused for its version:\n${old.out}`);
    // The refusal reached mcpeek (it was not just the local client giving up).
    await waitFor('"tls: handshake not completed" on stderr',
        () => /tls: handshake not completed/.test(proxy.proc.stderrText()));

    const v12 = await sClient(proxy.tlsPort, ['-tls1_2', '-servername', 'localhost', '-CAfile', pki.ca]);
    assert.equal(v12.code, 0, `TLS 1.2 handshake:\n${v12.out}`);
    assert.match(v12.out, /Protocol\s*:\s*TLSv1\.2/, v12.out);
    assert.match(v12.out, /Verify return code: 0 \(ok\)/, v12.out);

    const v13 = await sClient(proxy.tlsPort, ['-tls1_3', '-servername', 'localhost', '-CAfile', pki.ca]);
    assert.equal(v13.code, 0, `TLS 1.3 handshake:\n${v13.out}`);
    assert.match(v13.out, /New, TLSv1\.3, Cipher is TLS_/, v13.out);

    // The log names the version each exchange used.
    const v12Agent = new https.Agent({ keepAlive: true, maxVersion: 'TLSv1.2' });
    t.after(() => v12Agent.destroy());
    const r12 = await httpsRequest(proxy.tlsUrl, { headers: JSON_HEADERS, body: rpcBody('v12'), ca: pki.caPem,
        agent: v12Agent });
    assert.equal(r12.status, 200, r12.text);
    assert.equal(r12.protocol, 'TLSv1.2');
    const r13 = await httpsRequest(proxy.tlsUrl, { headers: JSON_HEADERS, body: rpcBody('v13'), ca: pki.caPem });
    assert.equal(r13.status, 200, r13.text);
    const lines = await proxy.expectLogCount(2);
    expectFields(lines.find((l) => l.rpc_id === 'v12'), { status: 200, tls: 'TLSv1.2' }, 'TLS 1.2 exchange');
    expectFields(lines.find((l) => l.rpc_id === 'v13'), { status: 200, tls: 'TLSv1.3' }, 'TLS 1.3 exchange');
});

test('tls_min_version_tlsv1_3_refuses_tls_1_2', { skip: skipDirect }, async (t) => {
    const pki = makePki(t);
    const up = await startScriptedUpstream(t, (req, res, body) => jsonResult(res, body));
    const proxy = await startTlsMcpeek(t, up.url, { ...pki.server, args: ['--tls-min-version', 'TLSv1.3'] });
    const v12 = await sClient(proxy.tlsPort, ['-tls1_2', '-servername', 'localhost', '-CAfile', pki.ca]);
    assert.notEqual(v12.code, 0, `TLS 1.2 must be refused with tls_min_version TLSv1.3:\n${v12.out}`);
    assert.doesNotMatch(v12.out, /Cipher is (?!\(NONE\))/, v12.out);
    const v13 = await sClient(proxy.tlsPort, ['-tls1_3', '-servername', 'localhost', '-CAfile', pki.ca]);
    assert.equal(v13.code, 0, `TLS 1.3 handshake:\n${v13.out}`);
    assert.equal(proxy.logs().length, 0, `handshakes alone log nothing:\n${fmtLines(proxy.logs())}`);
});

// ---- 5. certificate reload on SIGHUP ---------------------------------------------------

test('tls_certificate_reload_on_sighup_keeps_old_cert_on_a_broken_one', { skip: skipDirect }, async (t) => {
    const pki = makePki(t);
    const up = await startScriptedUpstream(t, (req, res, body) => jsonResult(res, body, { ok: 1 }));
    const conf = pki.path('mcpeek.conf');
    const writeConf = (cert, key) => fs.writeFileSync(conf,
        `# written by tls.test.js\ntls_cert ${cert}\ntls_key ${key}\n`);
    writeConf(pki.server.cert, pki.server.key);
    // The TLS listener is a flag: the harness's --listen replaces the file's listen list.
    const proxy = await startTlsMcpeek(t, up.url, { args: ['-c', conf] });
    const stderr = () => proxy.proc.stderrText();
    const count = (re) => (stderr().match(re) || []).length;
    const fpA = fingerprintOf(pki.server.cert);
    const fpB = fingerprintOf(pki.server2.cert);

    const showsSubject = async (cn) => {
        const r = await sClient(proxy.tlsPort, ['-servername', 'localhost', '-CAfile', pki.ca]);
        assert.equal(r.code, 0, r.out);
        assert.match(r.out, new RegExp(`subject=.*CN = ${cn.replace(/[()]/g, '\\$&')}`), `s_client shows ${cn}:\n${r.out}`);
    };
    assert.equal((await peerCertificate(proxy.tlsPort, { ca: pki.caPem })).fingerprint, fpA, 'cert A at start');
    await showsSubject('localhost (A)');

    // A keep-alive HTTPS connection made before the reload.
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca: pki.caPem });
    t.after(() => agent.destroy());
    const before = await httpsRequest(proxy.tlsUrl, { headers: JSON_HEADERS, body: rpcBody('before'), agent });
    assert.equal(before.status, 200, before.text);
    assert.equal(before.peerFingerprint, fpA);

    // Point the config at cert B and reload.
    writeConf(pki.server2.cert, pki.server2.key);
    process.kill(proxy.pid, 'SIGHUP');
    await waitFor('configuration reloaded', () => count(/configuration reloaded/g) >= 1, 5000);
    // Workers switch generation asynchronously, within milliseconds.
    await waitFor(`new handshakes get cert B after SIGHUP; stderr:\n${stderr()}`,
        async () => (await peerCertificate(proxy.tlsPort, { ca: pki.caPem })).fingerprint === fpB, 3000);
    await showsSubject('localhost (B)');

    // The connection established before the reload keeps working (and keeps cert A).
    const after = await httpsRequest(proxy.tlsUrl, { headers: JSON_HEADERS, body: rpcBody('after'), agent });
    assert.equal(after.status, 200, after.text);
    assert.equal(after.localPort, before.localPort, 'same keep-alive connection');
    assert.equal(after.peerFingerprint, fpA, 'an established connection keeps its certificate');

    // A broken certificate file: reload refused with an error line, cert B stays.
    const broken = pki.path('broken.pem');
    fs.writeFileSync(broken, '-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n');
    writeConf(broken, pki.server2.key);
    const errorsBefore = count(/"level":"error"/g);
    process.kill(proxy.pid, 'SIGHUP');
    await waitFor('an error line for the broken certificate', () => count(/"level":"error"/g) > errorsBefore, 5000);
    const errLine = stderr().split('\n').filter((l) => l.includes('"level":"error"')).pop();
    assert.match(errLine, /broken\.pem/, `the error names the file: ${errLine}`);
    await sleep(300);
    assert.equal((await peerCertificate(proxy.tlsPort, { ca: pki.caPem })).fingerprint, fpB,
        'a broken certificate keeps the previous one');
    await showsSubject('localhost (B)');

    // A key that does not match the certificate: refused the same way.
    writeConf(pki.server.cert, pki.server2.key);
    const errorsNow = count(/"level":"error"/g);
    process.kill(proxy.pid, 'SIGHUP');
    await waitFor('an error line for the mismatched key', () => count(/"level":"error"/g) > errorsNow, 5000);
    await sleep(300);
    assert.equal((await peerCertificate(proxy.tlsPort, { ca: pki.caPem })).fingerprint, fpB,
        'a mismatched key keeps the previous certificate');

    // Renewal in place (what certbot does): same paths, new contents, SIGHUP.
    writeConf(pki.server2.cert, pki.server2.key);
    fs.copyFileSync(pki.server.cert, pki.server2.cert);
    fs.copyFileSync(pki.server.key, pki.server2.key);
    const reloads = count(/configuration reloaded/g);
    process.kill(proxy.pid, 'SIGHUP');
    await waitFor('second successful reload', () => count(/configuration reloaded/g) > reloads, 5000);
    await waitFor('files replaced in place are picked up on SIGHUP',
        async () => (await peerCertificate(proxy.tlsPort, { ca: pki.caPem })).fingerprint === fpA, 3000);

    const last = await httpsRequest(proxy.tlsUrl, { headers: JSON_HEADERS, body: rpcBody('last'), ca: pki.caPem });
    assert.equal(last.status, 200, last.text);
    const lines = await proxy.expectLogCount(3);
    for (const l of lines) expectFields(l, { status: 200, tls: 'TLSv1.3' }, 'exchange around reloads');
});

// ---- 6. junk on the TLS port -----------------------------------------------------------

test('tls_port_survives_plain_http_and_abandoned_handshakes_without_log_lines', { skip: skipDirect }, async (t) => {
    const pki = makePki(t);
    const up = await startScriptedUpstream(t, (req, res, body) => jsonResult(res, body, { ok: 1 }));
    const proxy = await startTlsMcpeek(t, up.url, pki.server);
    const hello = await captureClientHello();
    assert.equal(hello[0], 0x16, 'captured a TLS handshake record');

    const plainHttp = Buffer.from(`POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:${proxy.tlsPort}\r\n` +
        `Content-Type: application/json\r\nContent-Length: ${rpcBody(1).length}\r\n\r\n${rpcBody(1)}`);
    for (let round = 0; round < 3; round++) {
        // Plain HTTP on the TLS port: refused, and the connection does not linger.
        const t0 = Date.now();
        const p = await rawProbe(proxy.tlsPort, plainHttp, { waitReply: true, timeoutMs: 5000 });
        assert.ok(p.closedByPeer || p.replied, 'mcpeek ends a plain-HTTP connection on its TLS port');
        assert.ok(Date.now() - t0 < 4000, `plain HTTP on the TLS port held for ${Date.now() - t0} ms`);
        // A full ClientHello, then gone as soon as the server answers (mid-handshake).
        const mid = await rawProbe(proxy.tlsPort, hello, { waitReply: true });
        assert.ok(mid.replied, 'mcpeek answered the ClientHello');
        // Half a ClientHello, then gone.
        await rawProbe(proxy.tlsPort, hello.subarray(0, Math.floor(hello.length / 2)), { pauseMs: 50 });
        // Connect and vanish without a byte.
        await rawProbe(proxy.tlsPort, null, { pauseMs: 10 });
    }
    // A burst of concurrent abandoned handshakes.
    await Promise.all(Array.from({ length: 20 }, (_, i) => rawProbe(proxy.tlsPort,
        i % 2 ? hello : hello.subarray(0, 30), { waitReply: i % 2 === 1, pauseMs: 20 })));

    // Still serving, over HTTPS and plain HTTP.
    const ok = await httpsRequest(proxy.tlsUrl, { headers: JSON_HEADERS, body: rpcBody('after-junk'), ca: pki.caPem });
    assert.equal(ok.status, 200, ok.text);
    assert.deepEqual(ok.json().id, 'after-junk');
    const plain = await post(proxy.url, rpcBody('plain'));
    assert.equal(plain.status, 200);

    // Only the two real exchanges are logged; the probes left a rate-limited stderr note.
    const lines = await proxy.expectLogCount(2);
    expectFields(lines.find((l) => l.rpc_id === 'after-junk'), { status: 200, tls: 'TLSv1.3' }, 'HTTPS after junk');
    assert.equal(up.requests.length, 2, 'no probe reached the upstream');
    await waitFor('"tls: handshake not completed" on stderr',
        () => /tls: handshake not completed/.test(proxy.proc.stderrText()));
    const notes = proxy.proc.stderrText().match(/tls: handshake not completed/g).length;
    assert.ok(notes <= 2, `handshake failures are rate-limited on stderr (got ${notes} lines)`);
});

// A client that asks for `Connection: close` must still get the whole answer before mcpeek
// closes (TLS: the data, then close_notify), over HTTPS as over HTTP.
test('tls_connection_close_request_gets_its_whole_answer', { skip: skipDirect }, async (t) => {
    const pki = makePki(t);
    const up = await startScriptedUpstream(t, (req, res, body) => jsonResult(res, body, { ok: 1 }));
    const proxy = await startTlsMcpeek(t, up.url, pki.server);
    const res = await httpsRequest(proxy.tlsUrl, {
        headers: { ...JSON_HEADERS, Connection: 'close' }, body: rpcBody('close-1'), ca: pki.caPem, agent: false,
    });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.json().id, 'close-1');
    const [line] = await proxy.expectLogCount(1);
    expectFields(line, { status: 200, tls: 'TLSv1.3', rpc_id: 'close-1' }, 'Connection: close over HTTPS');
});

// An 8 MiB JSON answer to an HTTPS client that reads slowly must arrive whole. mcpeek's output
// buffer grows (and moves) while an SSL_write waits for room: OpenSSL refuses such a retry
// ("bad write retry") unless the server context accepts a moving write buffer, and the client
// was cut at a few MB with "client_aborted".
test('tls_slow_reader_gets_a_large_answer_whole', { skip: skipDirect }, async (t) => {
    const pki = makePki(t);
    const size = 8 * 1024 * 1024;
    const big = `{"jsonrpc":"2.0","id":"big","result":{"blob":"${'x'.repeat(size - 60)}"}}`;
    const up = await startScriptedUpstream(t, (req, res) => {
        res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(big) });
        res.end(big);
    });
    const proxy = await startTlsMcpeek(t, up.url, pki.server);
    const body = rpcBody('big');
    const received = await new Promise((resolve, reject) => {
        const sock = tls.connect({ host: '127.0.0.1', port: proxy.tlsPort, ca: pki.caPem, servername: 'localhost',
            highWaterMark: 16 * 1024 }, () => {
            sock.write(`POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n` +
                `Accept: application/json, text/event-stream\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
                `Connection: close\r\n\r\n${body}`);
        });
        t.after(() => sock.destroy());
        let total = 0;
        const chunks = [];
        // A slow reader: after each piece, stop reading for a while so mcpeek's socket fills.
        sock.on('data', (d) => {
            total += d.length;
            chunks.push(d);
            sock.pause();
            setTimeout(() => sock.resume(), 3);
        });
        sock.on('end', () => resolve(Buffer.concat(chunks)));
        sock.on('error', reject);
        setTimeout(() => reject(new Error(`slow TLS read timed out after ${total} bytes`)), 60000);
    });
    const headEnd = received.indexOf('\r\n\r\n');
    assert.ok(headEnd > 0, 'a response head came');
    const head = received.subarray(0, headEnd).toString('latin1');
    assert.match(head, /^HTTP\/1\.1 200 /, head);
    const got = received.length - headEnd - 4;
    assert.equal(got, Buffer.byteLength(big), `body bytes received by the slow TLS reader (head:\n${head})`);
    const [line] = await proxy.expectLogCount(1);
    expectFields(line, { status: 200, tls: 'TLSv1.3', bytes_out: Buffer.byteLength(big) }, 'slow TLS reader');
    assert.equal(line.error, undefined, `no error on the line: ${JSON.stringify(line)}`);
});
