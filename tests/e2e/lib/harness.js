// Shared e2e plumbing: free ports, spawning server-everything and mcpeek, reading mcpeek's
// JSON log lines, and raw HTTP requests with full control over headers.
// Every process spawned here is killed at test teardown (t.after) and, as a last resort, when
// the test process exits. mcpeek's stderr is kept and checked at teardown for sanitizer reports.
// MCPEEK_E2E_DIRECT=1 skips mcpeek and points clients straight at the upstream (to prove the
// scaffolding itself); log assertions are then skipped by the tests.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const E2E_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const MCPEEK_BIN = process.env.MCPEEK_BIN || '/work/main/build/mcpeek';
export const MCPEEK_WRAPPER = (process.env.MCPEEK_WRAPPER || '').split(' ').filter(Boolean);
export const DIRECT = process.env.MCPEEK_E2E_DIRECT === '1';
// RSS ceilings only mean something for a plain build; a wrapper (valgrind) changes the process.
export const RSS_LIMIT_MB = Number(process.env.MCPEEK_E2E_RSS_LIMIT_MB || 100);
// MCPEEK_E2E_CHECK_RSS=0 for sanitizer builds: ASan's quarantine keeps freed memory resident.
export const CHECK_RSS = MCPEEK_WRAPPER.length === 0 && process.env.MCPEEK_E2E_CHECK_RSS !== '0';
// Waits stretch under a wrapper: valgrind runs mcpeek ~20x slower.
export const TIME_SCALE = MCPEEK_WRAPPER.length ? 4 : 1;
const SANITIZER_MARKERS = ['ERROR: AddressSanitizer', 'ERROR: LeakSanitizer', 'runtime error:',
    'WARNING: ThreadSanitizer'];

const live = new Set(); // every child still running, for the exit handlers
function killAll() {
    for (const child of live) {
        try { child.kill('SIGKILL'); } catch { /* already gone */ }
    }
}
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.once(sig, () => { killAll(); process.exit(128 + (sig === 'SIGINT' ? 2 : sig === 'SIGTERM' ? 15 : 1)); });
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export async function freePort() {
    return new Promise((resolve, reject) => {
        const srv = net.createServer();
        srv.unref();
        srv.on('error', reject);
        srv.listen(0, '127.0.0.1', () => {
            const { port } = srv.address();
            srv.close(() => resolve(port));
        });
    });
}

export async function waitForPort(port, { timeoutMs = 10000, proc } = {}) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        if (proc && proc.exitCode !== null) {
            throw new Error(`${proc.label} exited (code ${proc.exitCode}) before listening on ` +
                `${port}\n--- its output ---\n${proc.output()}`);
        }
        const ok = await new Promise((resolve) => {
            const sock = net.connect(port, '127.0.0.1');
            sock.once('connect', () => { sock.destroy(); resolve(true); });
            sock.once('error', () => resolve(false));
        });
        if (ok) return;
        if (Date.now() > deadline) {
            throw new Error(`nothing listening on 127.0.0.1:${port} after ${timeoutMs} ms` +
                (proc ? `\n--- ${proc.label} output ---\n${proc.output()}` : ''));
        }
        await sleep(50);
    }
}

// Stops a child: SIGTERM, then SIGKILL after graceMs (3 s; longer for a wrapped mcpeek).
// Resolves with { code, signal }.
export async function stopProcess(child, graceMs = 3000) {
    if (child.exitCode !== null || child.signalCode !== null) {
        if (!child.closed) await new Promise((resolve) => child.once('close', resolve));
        return { code: child.exitCode, signal: child.signalCode };
    }
    // 'close', not 'exit': a sanitizer report written at exit may still sit unread in the pipe.
    const exited = new Promise((resolve) => child.once('close', (code, signal) => resolve({ code, signal })));
    child.kill('SIGTERM');
    const timer = setTimeout(() => { try { child.kill('SIGKILL'); } catch { /* gone */ } }, graceMs);
    const result = await exited;
    clearTimeout(timer);
    return result;
}

// Spawns a child whose stdout+stderr are captured; registered for teardown on t.
export function spawnTracked(t, label, cmd, args, opts = {}) {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    child.label = label;
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    child.output = () => out + err;
    child.stderrText = () => err;
    child.exitInfo = null;
    live.add(child);
    child.on('exit', (code, signal) => { child.exitInfo = { code, signal }; live.delete(child); });
    child.closed = false;
    child.on('close', () => { child.closed = true; });
    child.on('error', (e) => { err += `spawn error: ${e.message}\n`; });
    if (t) t.after(() => stopProcess(child));
    return child;
}

// server-everything over Streamable HTTP on a fresh port. Returns { port, url, proc }.
export async function startEverything(t) {
    const port = await freePort();
    const script = path.join(E2E_DIR, 'node_modules/@modelcontextprotocol/server-everything/dist/index.js');
    const proc = spawnTracked(t, 'server-everything', process.execPath, [script, 'streamableHttp'], {
        env: { ...process.env, PORT: String(port) },
        cwd: E2E_DIR,
    });
    const deadline = Date.now() + 15000;
    while (!/listening on port/.test(proc.output())) {
        if (proc.exitCode !== null) throw new Error(`server-everything exited:\n${proc.output()}`);
        if (Date.now() > deadline) throw new Error(`server-everything not ready:\n${proc.output()}`);
        await sleep(50);
    }
    await waitForPort(port, { proc });
    return { port, url: `http://127.0.0.1:${port}/mcp`, origin: `http://127.0.0.1:${port}`, proc };
}

// mcpeek in front of upstreamUrl. Returns an object with url/origin (what clients use), the
// log file, and helpers. In DIRECT mode it returns the upstream itself and logs() is empty.
// `prefix`: a command line mcpeek is started under (it must exec mcpeek with the arguments
// appended), e.g. a private mount namespace: ['unshare', '-m', 'sh', '-c', '...; exec "$@"', 'sh'].
export async function startMcpeek(t, upstreamUrl, { args = [], logFile, adminPort, env = {}, prefix = [] } = {}) {
    if (DIRECT) {
        const u = new URL(upstreamUrl);
        return {
            direct: true, url: upstreamUrl, origin: u.origin, port: Number(u.port), pid: null,
            logs: () => [], waitForLogs: async () => [], expectLogCount: async () => [],
            assertSettled: async () => [], vmHWMkB: () => 0, proc: null,
        };
    }
    if (!fs.existsSync(MCPEEK_BIN)) {
        throw new Error(`mcpeek binary not found at ${MCPEEK_BIN} (set MCPEEK_BIN, or MCPEEK_E2E_DIRECT=1)`);
    }
    const port = await freePort();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mcpeek-e2e-'));
    const log = logFile || path.join(dir, 'access.log');
    const fullArgs = ['--listen', `127.0.0.1:${port}`, '--upstream', upstreamUrl, '--log-file', log,
        '--admin-listen', adminPort ? `127.0.0.1:${adminPort}` : 'off', '--workers', '1', ...args];
    const line = [...prefix, ...MCPEEK_WRAPPER, MCPEEK_BIN, ...fullArgs];
    const [cmd, ...cmdArgs] = line;
    const proc = spawnTracked(null, 'mcpeek', cmd, cmdArgs, { env: { ...process.env, ...env } });
    proc.cmdline = [cmd, ...cmdArgs].join(' ');

    // Teardown: stop mcpeek, then fail the test if it crashed, was flagged by a sanitizer or
    // valgrind, or did not exit cleanly on SIGTERM.
    t.after(async () => {
        const wasRunning = proc.exitInfo === null;
        const early = proc.exitInfo;
        const res = await stopProcess(proc, 3000 * TIME_SCALE);
        const stderr = proc.stderrText();
        if (process.env.MCPEEK_E2E_VERBOSE === '1') {
            let text = '';
            try { text = fs.readFileSync(log, 'utf8'); } catch { /* no log */ }
            console.error(`--- mcpeek log file ${log} ---\n${text}--- end ---`);
        }
        fs.rmSync(dir, { recursive: true, force: true });
        const found = SANITIZER_MARKERS.filter((m) => stderr.includes(m));
        if (found.length || !wasRunning || process.env.MCPEEK_E2E_VERBOSE === '1') {
            // Also on stderr: when the test body failed too, the runner shows only its error.
            console.error(`--- mcpeek stderr (${proc.cmdline}) ---\n${stderr}\n--- end ---`);
        }
        if (found.length) {
            throw new Error(`mcpeek stderr has a sanitizer report (${found.join(', ')}):\n${stderr}`);
        }
        if (!wasRunning) {
            throw new Error(`mcpeek died during the test (exit ${JSON.stringify(early)}); ` +
                `command: ${proc.cmdline}\nstderr:\n${stderr}`);
        }
        if (res.code === 99) throw new Error(`valgrind reported errors (exit 99):\n${stderr}`);
        if (res.signal === 'SIGKILL') {
            throw new Error(`mcpeek ignored SIGTERM for 3 s and was killed; stderr:\n${stderr}`);
        }
    });

    await waitForPort(port, { proc, timeoutMs: 10000 * TIME_SCALE * (MCPEEK_WRAPPER.length ? 2 : 1) });

    const readLines = () => {
        let text;
        try { text = fs.readFileSync(log, 'utf8'); } catch { return []; }
        const lines = text.split('\n');
        lines.pop(); // the part after the last newline is not a finished line
        return lines.map((line, i) => {
            try { return JSON.parse(line); } catch (e) {
                throw new Error(`log line ${i + 1} is not JSON (${e.message}): ${line}`);
            }
        });
    };
    const self = {
        direct: false, cmdline: proc.cmdline, url: new URL(new URL(upstreamUrl).pathname, `http://127.0.0.1:${port}`).href,
        origin: `http://127.0.0.1:${port}`, port, pid: proc.pid, proc, logFile: log,
        logs: readLines,
        // Waits until pred (default: exchange lines) matches at least n lines; returns all
        // lines, conversation lines ("msg":"conversation") included.
        async waitForLogs(n = 1, pred = isExchangeLine, timeoutMs = 5000) {
            const deadline = Date.now() + timeoutMs * TIME_SCALE;
            for (;;) {
                const lines = readLines();
                if (lines.filter(pred).length >= n) return lines;
                if (Date.now() > deadline) {
                    throw new Error(`expected >= ${n} matching log lines within ${timeoutMs} ms, ` +
                        `got ${lines.filter(pred).length}; all lines:\n${fmtLines(lines)}`);
                }
                await sleep(25);
            }
        },
        // Waits for exactly n exchange lines (and checks no extra one shows up shortly after);
        // returns them. Conversation lines are not exchanges: see logs().
        async expectLogCount(n, timeoutMs = 5000) {
            await self.waitForLogs(n, isExchangeLine, timeoutMs);
            await sleep(250);
            const lines = readLines().filter(isExchangeLine);
            if (lines.length !== n) {
                throw new Error(`expected exactly ${n} log lines (one per exchange), got ` +
                    `${lines.length}:\n${fmtLines(readLines())}`);
            }
            return lines;
        },
        vmHWMkB() { return procStatusKB(proc.pid, 'VmHWM'); },
        vmRSSkB() { return procStatusKB(proc.pid, 'VmRSS'); },
    };
    return self;
}

// An exchange's line, as opposed to a conversation's ("msg":"conversation").
export const isExchangeLine = (l) => l.msg === 'mcp';

export function fmtLines(lines) {
    return lines.map((l, i) => `  [${i}] ${JSON.stringify(l)}`).join('\n') || '  (none)';
}

export function procStatusKB(pid, field) {
    const text = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = text.match(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm'));
    if (!m) throw new Error(`no ${field} in /proc/${pid}/status`);
    return Number(m[1]);
}

// A raw HTTP/1.1 request with exact headers (array of [name, value] pairs keeps order and
// allows hop-by-hop names fetch() refuses). Resolves with status, headers, rawHeaders, body.
export function request(url, { method = 'GET', headers = [], body, agent = false, timeoutMs = 15000, onSocket } = {}) {
    return new Promise((resolve, reject) => {
        const u = new URL(url);
        const flat = [];
        // With headers given as an array node adds no Host header; HTTP/1.1 requires one.
        if (!headers.some(([k]) => k.toLowerCase() === 'host')) flat.push('Host', u.host);
        for (const [k, v] of headers) flat.push(k, v);
        if (body !== undefined && !headers.some(([k]) => k.toLowerCase() === 'content-length')) {
            flat.push('Content-Length', String(Buffer.byteLength(body)));
        }
        const req = http.request({
            host: u.hostname, port: u.port, path: u.pathname + u.search, method, headers: flat, agent,
        }, (res) => {
            const chunks = [];
            res.on('data', (c) => chunks.push(c));
            res.on('end', () => resolve({
                status: res.statusCode, headers: res.headers, rawHeaders: res.rawHeaders,
                body: Buffer.concat(chunks), text: () => Buffer.concat(chunks).toString('utf8'),
                json: () => JSON.parse(Buffer.concat(chunks).toString('utf8')),
            }));
            res.on('error', reject);
        });
        if (onSocket) req.on('socket', onSocket);
        req.setTimeout(timeoutMs, () => req.destroy(new Error(`request timed out after ${timeoutMs} ms`)));
        req.on('error', reject);
        if (body !== undefined) req.write(body);
        req.end();
    });
}

// Headers a Streamable HTTP client sends with a POST.
export const POST_HEADERS = [
    ['Content-Type', 'application/json'],
    ['Accept', 'application/json, text/event-stream'],
];

// Parses an SSE body into events ({ id, event, data }).
export function parseSse(text) {
    const events = [];
    for (const block of text.split(/\r?\n\r?\n/)) {
        if (!block.trim()) continue;
        const ev = { data: '' };
        const data = [];
        for (const line of block.split(/\r?\n/)) {
            if (line.startsWith(':')) continue;
            const i = line.indexOf(':');
            const field = i < 0 ? line : line.slice(0, i);
            const value = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
            if (field === 'data') data.push(value); else ev[field] = value;
        }
        ev.data = data.join('\n');
        if (data.length || ev.event || ev.id) events.push(ev);
    }
    return events;
}

// Starts a request and resolves at the response headers, leaving the body to the caller
// ({ req, res }); for streams read as they come, paused, or abandoned mid-way.
export function openStream(url, { method = 'POST', headers = [], body, agent = false } = {}) {
    return new Promise((resolve, reject) => {
        const u = new URL(url);
        const flat = ['Host', u.host];
        for (const [k, v] of headers) flat.push(k, v);
        if (body !== undefined) flat.push('Content-Length', String(Buffer.byteLength(body)));
        const req = http.request({
            host: u.hostname, port: u.port, path: u.pathname + u.search, method, headers: flat, agent,
        }, (res) => resolve({ req, res }));
        req.on('error', reject);
        if (body !== undefined) req.write(body);
        req.end();
    });
}

// Asserts that a log line has the given field values; the message shows the whole line.
export function expectFields(line, want, what = 'log line') {
    for (const [k, v] of Object.entries(want)) {
        const got = line[k];
        const same = (v && typeof v === 'object') ? JSON.stringify(got) === JSON.stringify(v) : got === v;
        if (!same) {
            throw new assert.AssertionError({
                message: `${what}: ${k} expected ${JSON.stringify(v)}, got ${JSON.stringify(got)}\n  line: ${JSON.stringify(line)}`,
                actual: got, expected: v, operator: 'strictEqual',
            });
        }
    }
}
