// TLS plumbing for tls.test.js: a throwaway PKI made with the openssl CLI at test time, an HTTPS
// JSON-RPC upstream, HTTPS requests that trust the private CA, and small probes (openssl
// s_client, peer-certificate fingerprints, half-done handshakes).
//
// makePki() writes into a fresh temp dir (removed at test teardown):
//   ca.pem / ca.key                       private CA ("mcpeek e2e CA")
//   server.pem / server.key               localhost + 127.0.0.1, signed by the CA (cert A)
//   server2.pem / server2.key             same names, another key and serial (cert B, reload)
//   expired.pem / expired.key             localhost + 127.0.0.1, valid 2020-01-01..2020-01-02
//   wronghost.pem / wronghost.key         wrong.example only
//   client.pem / client.key               clientAuth certificate for mutual TLS
// Keys are EC P-256 (fast to make). The expired certificate comes from `openssl ca` with
// -startdate/-enddate, since `openssl x509 -req` in OpenSSL 3.0 cannot backdate notBefore.

import { listenUntilTeardown } from './scripted-upstream.js';
import { execFileSync, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';

function openssl(args, opts = {}) {
    try {
        return execFileSync('openssl', args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    } catch (e) {
        throw new Error(`openssl ${args.join(' ')} failed: ${e.stderr || e.message}`);
    }
}

function newKeyAndCsr(dir, name, subj) {
    const key = path.join(dir, `${name}.key`);
    const csr = path.join(dir, `${name}.csr`);
    openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
        '-keyout', key, '-out', csr, '-subj', subj]);
    return { key, csr };
}

const LEAF_EXT = (san, eku) => [
    'basicConstraints = critical, CA:FALSE',
    'keyUsage = critical, digitalSignature',
    `extendedKeyUsage = ${eku}`,
    ...(san ? [`subjectAltName = ${san}`] : []),
    'subjectKeyIdentifier = hash',
    'authorityKeyIdentifier = keyid',
].join('\n') + '\n';

// Creates the whole PKI; registers removal of the temp dir on t (if given).
export function makePki(t) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mcpeek-tls-'));
    if (t) t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
    const p = (f) => path.join(dir, f);

    openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
        '-keyout', p('ca.key'), '-out', p('ca.pem'), '-days', '3', '-subj', '/CN=mcpeek e2e CA',
        '-addext', 'basicConstraints=critical,CA:TRUE',
        '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);

    let serial = 0x1000;
    const sign = (name, subj, san, eku = 'serverAuth') => {
        const { csr } = newKeyAndCsr(dir, name, subj);
        const ext = p(`${name}.ext`);
        fs.writeFileSync(ext, LEAF_EXT(san, eku));
        serial += 1;
        openssl(['x509', '-req', '-in', csr, '-CA', p('ca.pem'), '-CAkey', p('ca.key'),
            '-set_serial', String(serial), '-days', '2', '-sha256', '-extfile', ext,
            '-out', p(`${name}.pem`)]);
    };
    const LOCAL = 'DNS:localhost, IP:127.0.0.1';
    sign('server', '/O=mcpeek e2e/CN=localhost (A)', LOCAL);
    sign('server2', '/O=mcpeek e2e/CN=localhost (B)', LOCAL);
    sign('wronghost', '/O=mcpeek e2e/CN=wrong.example', 'DNS:wrong.example');
    sign('client', '/O=mcpeek e2e/CN=mcpeek client', null, 'clientAuth');

    // Expired: `openssl ca` takes explicit start and end dates.
    fs.mkdirSync(p('ca-db'));
    fs.writeFileSync(p('ca-db/index.txt'), '');
    fs.writeFileSync(p('ca-db/serial'), '2000\n');
    fs.writeFileSync(p('ca.cnf'), [
        '[ca]', 'default_ca = e2e',
        '[e2e]',
        `dir = ${p('ca-db')}`,
        'database = $dir/index.txt', 'serial = $dir/serial', 'new_certs_dir = $dir',
        `certificate = ${p('ca.pem')}`, `private_key = ${p('ca.key')}`,
        'default_md = sha256', 'policy = any', 'unique_subject = no', 'copy_extensions = none',
        'x509_extensions = leaf',
        '[any]', 'commonName = supplied', 'organizationName = optional',
        '[leaf]', LEAF_EXT(LOCAL, 'serverAuth'),
    ].join('\n') + '\n');
    const { csr } = newKeyAndCsr(dir, 'expired', '/O=mcpeek e2e/CN=localhost (expired)');
    openssl(['ca', '-batch', '-notext', '-config', p('ca.cnf'), '-in', csr, '-out', p('expired.pem'),
        '-startdate', '20200101000000Z', '-enddate', '20200102000000Z']);

    const pair = (name) => ({ cert: p(`${name}.pem`), key: p(`${name}.key`) });
    return {
        dir,
        path: p,
        ca: p('ca.pem'),
        caPem: fs.readFileSync(p('ca.pem')),
        server: pair('server'),
        server2: pair('server2'),
        expired: pair('expired'),
        wronghost: pair('wronghost'),
        client: pair('client'),
    };
}

// SHA-256 fingerprint of a PEM certificate file, in node's AA:BB:... form.
export function fingerprintOf(certFile) {
    return new crypto.X509Certificate(fs.readFileSync(certFile)).fingerprint256;
}

// An HTTPS upstream answering every POST with a JSON-RPC result echoing the request id.
// tlsOpts go to https.createServer (cert/key as PEM file paths or buffers, requestCert, ca...).
// Records requests, and TLS client errors (failed handshakes) as tlsErrors.
export async function startHttpsUpstream(t, { cert, key, ...tlsOpts }) {
    const state = { requests: [], tlsErrors: [], sockets: new Set() };
    const rd = (x) => (typeof x === 'string' ? fs.readFileSync(x) : x);
    const server = https.createServer({ cert: rd(cert), key: rd(key), ...tlsOpts }, (req, res) => {
        const chunks = [];
        req.on('data', (c) => chunks.push(c));
        req.on('end', () => {
            const body = Buffer.concat(chunks).toString('utf8');
            const peer = req.socket.getPeerCertificate();
            state.requests.push({ method: req.method, url: req.url, headers: req.headers, body,
                clientCertSubject: peer && peer.subject ? peer.subject.CN : null });
            let id = null;
            try { id = JSON.parse(body).id ?? null; } catch { /* keep null */ }
            const out = JSON.stringify({ jsonrpc: '2.0', id, result: { ok: true, tls: req.socket.getProtocol() } });
            res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(out) });
            res.end(out);
        });
    });
    server.on('tlsClientError', (err) => state.tlsErrors.push(err.code || err.message));
    server.on('secureConnection', (s) => { state.sockets.add(s); s.on('close', () => state.sockets.delete(s)); });
    const port = await listenUntilTeardown(t, server, state.sockets);
    return {
        port, server,
        url: `https://127.0.0.1:${port}/mcp`,
        localhostUrl: `https://localhost:${port}/mcp`,
        get requests() { return state.requests; },
        get tlsErrors() { return state.tlsErrors; },
    };
}

// One HTTPS request. opts: method, headers (object), body, ca (PEM), servername, agent,
// timeoutMs. Without an agent it uses a keep-alive one of its own (destroyed once the answer
// is read), so mcpeek sees a normal keep-alive client; pass `Connection: close` in headers
// to ask for the other case. Resolves with { status, headers, text, json(), protocol,
// peerFingerprint, localPort }.
export function httpsRequest(url, { method = 'POST', headers = {}, body, ca, servername, agent,
    timeoutMs = 15000 } = {}) {
    const own = agent ? null : new https.Agent({ keepAlive: true, maxSockets: 1 });
    return httpsRequestOn(url, { method, headers, body, ca, servername, agent: agent || own, timeoutMs })
        .finally(() => { if (own) own.destroy(); });
}

function httpsRequestOn(url, { method, headers, body, ca, servername, agent, timeoutMs }) {
    return new Promise((resolve, reject) => {
        const u = new URL(url);
        const h = { ...headers };
        if (body !== undefined) h['Content-Length'] = String(Buffer.byteLength(body));
        const req = https.request({
            host: u.hostname, port: u.port, path: u.pathname + u.search, method, headers: h, ca,
            servername: servername ?? (net.isIP(u.hostname) ? undefined : u.hostname), agent,
        }, (res) => {
            const chunks = [];
            const protocol = res.socket.getProtocol();
            const peer = res.socket.getPeerCertificate();
            const { localPort } = res.socket;
            res.on('data', (c) => chunks.push(c));
            res.on('end', () => {
                const text = Buffer.concat(chunks).toString('utf8');
                resolve({
                    status: res.statusCode, headers: res.headers, text, protocol,
                    peerFingerprint: peer ? peer.fingerprint256 : null,
                    localPort,
                    json: () => JSON.parse(text),
                });
            });
            res.on('error', reject);
        });
        req.setTimeout(timeoutMs, () => req.destroy(new Error(`https request timed out after ${timeoutMs} ms`)));
        req.on('error', reject);
        if (body !== undefined) req.write(body);
        req.end();
    });
}

// Completes a TLS handshake and returns what the server presented, then closes.
export function peerCertificate(port, { ca, servername = 'localhost', timeoutMs = 5000 } = {}) {
    return new Promise((resolve, reject) => {
        const sock = tls.connect({ host: '127.0.0.1', port, ca, servername }, () => {
            const c = sock.getPeerCertificate();
            resolve({ fingerprint: c.fingerprint256, subject: c.subject, serial: c.serialNumber,
                protocol: sock.getProtocol() });
            sock.end();
        });
        sock.setTimeout(timeoutMs, () => sock.destroy(new Error('TLS handshake timed out')));
        sock.on('error', reject);
    });
}

// Runs `openssl s_client -connect 127.0.0.1:port ...extra` with stdin closed.
// Resolves with { code, out } (stdout + stderr), never rejects.
export function sClient(port, extra = [], { timeoutMs = 10000 } = {}) {
    return new Promise((resolve) => {
        const child = spawn('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, ...extra],
            { stdio: ['pipe', 'pipe', 'pipe'] });
        let out = '';
        child.stdout.on('data', (d) => { out += d; });
        child.stderr.on('data', (d) => { out += d; });
        child.stdin.end();
        const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
        child.on('close', (code, signal) => { clearTimeout(timer); resolve({ code, signal, out }); });
    });
}

// The ClientHello node sends for a TLS connection to 127.0.0.1 (SNI localhost), captured from a
// local TCP server that never answers. Handy to replay a real-looking, half-done handshake.
export async function captureClientHello() {
    return new Promise((resolve, reject) => {
        const srv = net.createServer((sock) => {
            sock.once('data', (chunk) => {
                sock.destroy();
                srv.close();
                resolve(chunk);
            });
        });
        srv.listen(0, '127.0.0.1', () => {
            const c = tls.connect({ host: '127.0.0.1', port: srv.address().port, servername: 'localhost',
                rejectUnauthorized: false });
            c.on('error', () => { /* the capture server hangs up on purpose */ });
        });
        srv.on('error', reject);
    });
}

// Connects, writes bytes, then either waits for the first bytes back (waitReply) or a fixed
// pause, and destroys the socket. Resolves with { replied, bytesBack, closedByPeer }.
export function rawProbe(port, bytes, { waitReply = false, pauseMs = 200, timeoutMs = 3000 } = {}) {
    return new Promise((resolve) => {
        let bytesBack = 0;
        let closedByPeer = false;
        let done = false;
        const finish = () => {
            if (done) return;
            done = true;
            sock.destroy();
            resolve({ replied: bytesBack > 0, bytesBack, closedByPeer });
        };
        const sock = net.connect(port, '127.0.0.1', () => {
            if (bytes && bytes.length) sock.write(bytes);
            if (!waitReply) setTimeout(finish, pauseMs);
        });
        sock.on('data', (d) => { bytesBack += d.length; if (waitReply) finish(); });
        sock.on('end', () => { closedByPeer = true; finish(); });
        sock.on('error', () => finish());
        setTimeout(finish, timeoutMs);
    });
}
