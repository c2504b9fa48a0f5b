// Helpers for the operations e2e tests (tests/e2e/operations.test.js): mcpeek started from a
// config file (`-c FILE`, no --upstream), one-shot runs (`-t`, failing starts), signals, the
// JSON diagnostics on stderr, Prometheus scrapes parsed by the official Python parser, and
// socket checks. Built on lib/harness.js; every process started here is stopped at teardown.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import {
    MCPEEK_BIN, MCPEEK_WRAPPER, request, sleep, spawnTracked, stopProcess, TIME_SCALE, waitForPort,
} from './harness.js';

const SANITIZER_MARKERS = ['ERROR: AddressSanitizer', 'ERROR: LeakSanitizer', 'runtime error:',
    'WARNING: ThreadSanitizer'];
export const PYTHON = '/usr/bin/python3';

function command(args) {
    return MCPEEK_WRAPPER.length
        ? { cmd: MCPEEK_WRAPPER[0], args: [...MCPEEK_WRAPPER.slice(1), MCPEEK_BIN, ...args] }
        : { cmd: MCPEEK_BIN, args };
}

function sanitizerFindings(text) {
    return SANITIZER_MARKERS.filter((m) => text.includes(m));
}

// A fresh temporary directory, removed at teardown.
export function tempDir(t) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mcpeek-ops-'));
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
    return dir;
}

// Writes a config file from an array of lines (or a string); returns its path.
export function writeConf(file, lines) {
    fs.writeFileSync(file, Array.isArray(lines) ? `${lines.join('\n')}\n` : lines);
    return file;
}

// Runs mcpeek to completion (for -t and for starts that must fail). Never left running:
// killed after timeoutMs. Resolves with { code, signal, stdout, stderr, ms }.
export function runMcpeek(args, { timeoutMs = 5000 } = {}) {
    const { cmd, args: full } = command(args);
    const started = Date.now();
    return new Promise((resolve, reject) => {
        const child = spawn(cmd, full, { stdio: ['ignore', 'pipe', 'pipe'] });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (d) => { stdout += d; });
        child.stderr.on('data', (d) => { stderr += d; });
        const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs * TIME_SCALE);
        child.on('error', (e) => { clearTimeout(timer); reject(e); });
        child.on('close', (code, signal) => {
            clearTimeout(timer);
            const found = sanitizerFindings(stderr);
            if (found.length) {
                reject(new Error(`mcpeek ${args.join(' ')}: sanitizer report (${found.join(', ')}):\n${stderr}`));
                return;
            }
            resolve({ code, signal, stdout, stderr, ms: Date.now() - started });
        });
    });
}

// Starts `mcpeek -c confPath ...args` and waits until proxyPort accepts connections.
// Returns a handle:
//   proc, pid, stderr(), diags() (parsed JSON stderr lines),
//   signal(name), waitForDiag(re, { count, timeoutMs }), waitExit(timeoutMs),
//   expectExit() (the test stops it itself: teardown then does not call an exit a crash).
// Teardown: stops it if still running; fails on a sanitizer report, on a death the test did
// not expect, on an exit code other than 0, or when SIGTERM was ignored.
export async function startWithConfig(t, confPath, { args = [], proxyPort, env = {} } = {}) {
    const { cmd, args: full } = command(['-c', confPath, ...args]);
    const proc = spawnTracked(null, 'mcpeek', cmd, full, { env: { ...process.env, ...env } });
    const cmdline = [cmd, ...full].join(' ');
    let exitExpected = false;
    const exited = new Promise((resolve) => {
        if (proc.exitInfo) resolve(proc.exitInfo);
        proc.once('exit', (code, signal) => resolve({ code, signal }));
    });

    t.after(async () => {
        const wasRunning = proc.exitInfo === null;
        const res = await stopProcess(proc, 3000 * TIME_SCALE);
        const stderr = proc.stderrText();
        const found = sanitizerFindings(stderr);
        if (found.length || (!wasRunning && !exitExpected) || process.env.MCPEEK_E2E_VERBOSE === '1') {
            console.error(`--- mcpeek stderr (${cmdline}) ---\n${stderr}\n--- end ---`);
        }
        if (found.length) throw new Error(`mcpeek stderr has a sanitizer report (${found.join(', ')}):\n${stderr}`);
        if (!wasRunning && !exitExpected) {
            throw new Error(`mcpeek died during the test (exit ${JSON.stringify(proc.exitInfo)}); ` +
                `command: ${cmdline}\nstderr:\n${stderr}`);
        }
        if (res.code === 99) throw new Error(`valgrind reported errors (exit 99):\n${stderr}`);
        if (res.signal === 'SIGKILL') throw new Error(`mcpeek ignored SIGTERM for 3 s and was killed; stderr:\n${stderr}`);
        if (res.code !== 0) throw new Error(`mcpeek exited ${JSON.stringify(res)} instead of 0; stderr:\n${stderr}`);
    });

    if (proxyPort) {
        await waitForPort(proxyPort, { proc, timeoutMs: 10000 * TIME_SCALE * (MCPEEK_WRAPPER.length ? 2 : 1) });
    }

    const diags = () => proc.stderrText().split('\n').filter((l) => l.trim()).map((l) => {
        try { return JSON.parse(l); } catch { return { raw: l }; }
    });
    return {
        proc, pid: proc.pid, cmdline,
        stderr: () => proc.stderrText(),
        diags,
        signal(name) { process.kill(proc.pid, name); },
        expectExit() { exitExpected = true; },
        // Waits until at least `count` diagnostic lines match re (tested against the msg of a
        // JSON line, or the raw text of a non-JSON line); returns the matching lines.
        async waitForDiag(re, { count = 1, timeoutMs = 5000 } = {}) {
            const deadline = Date.now() + timeoutMs * TIME_SCALE;
            for (;;) {
                const hits = diags().filter((d) => re.test(d.msg ?? d.raw));
                if (hits.length >= count) return hits;
                if (Date.now() > deadline) {
                    throw new Error(`no ${count} stderr line(s) matching ${re} within ${timeoutMs} ms; ` +
                        `stderr:\n${proc.stderrText()}`);
                }
                if (proc.exitInfo) {
                    throw new Error(`mcpeek exited (${JSON.stringify(proc.exitInfo)}) while waiting for ${re}; ` +
                        `stderr:\n${proc.stderrText()}`);
                }
                await sleep(20);
            }
        },
        // Resolves { code, signal, ms } once it exits; rejects after timeoutMs.
        async waitExit(timeoutMs = 5000) {
            const started = Date.now();
            let timer;
            const timeout = new Promise((_, reject) => {
                timer = setTimeout(() => reject(new Error(`mcpeek still running after ${timeoutMs} ms; ` +
                    `stderr:\n${proc.stderrText()}`)), timeoutMs * TIME_SCALE);
            });
            try {
                const res = await Promise.race([exited, timeout]);
                return { ...res, ms: Date.now() - started };
            } finally {
                clearTimeout(timer);
            }
        },
    };
}

// True when a TCP connect to 127.0.0.1:port is refused (nothing bound there).
export function connectRefused(port) {
    return new Promise((resolve, reject) => {
        const sock = net.connect(port, '127.0.0.1');
        sock.setTimeout(2000);
        sock.once('connect', () => { sock.destroy(); resolve(false); });
        sock.once('timeout', () => { sock.destroy(); reject(new Error(`connect to ${port} hung`)); });
        sock.once('error', (e) => {
            if (e.code === 'ECONNREFUSED') resolve(true); else reject(e);
        });
    });
}

// TCP ports a process listens on, from /proc (its socket inodes matched against
// /proc/net/tcp and tcp6, state 0A = LISTEN).
export function listeningPorts(pid) {
    const inodes = new Set();
    for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
        let target;
        try { target = fs.readlinkSync(`/proc/${pid}/fd/${fd}`); } catch { continue; }
        const m = target.match(/^socket:\[(\d+)\]$/);
        if (m) inodes.add(m[1]);
    }
    const ports = new Set();
    for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
        let text;
        try { text = fs.readFileSync(table, 'utf8'); } catch { continue; }
        for (const line of text.split('\n').slice(1)) {
            const f = line.trim().split(/\s+/);
            if (f.length < 10 || f[3] !== '0A' || !inodes.has(f[9])) continue;
            ports.add(parseInt(f[1].split(':')[1], 16));
        }
    }
    return [...ports].sort((a, b) => a - b);
}

// GET /metrics on the admin port, parsed by prometheus_client's own parser (which rejects
// malformed exposition). Returns { samples: [[name, labels, value]], text, headers }.
export async function scrape(adminPort) {
    const res = await request(`http://127.0.0.1:${adminPort}/metrics`);
    assert.equal(res.status, 200, `/metrics answered ${res.status}: ${res.text()}`);
    const text = res.text();
    const py = 'import sys,json; from prometheus_client.parser import text_string_to_metric_families as p; ' +
        'print(json.dumps([[s.name, s.labels, s.value] for f in p(sys.stdin.read()) for s in f.samples]))';
    const out = spawnSync(PYTHON, ['-c', py], { input: text, encoding: 'utf8' });
    if (out.status !== 0) {
        throw new Error(`prometheus_client could not parse /metrics (${out.stderr}):\n${text}`);
    }
    return { samples: JSON.parse(out.stdout), text, headers: res.headers };
}

// The samples named `name` whose labels include every pair of `labels`.
export function samplesOf(samples, name, labels = {}) {
    return samples.filter(([n, l]) => n === name &&
        Object.entries(labels).every(([k, v]) => l[k] === v));
}

// The value of the one sample named `name` whose label set is exactly `labels`
// (undefined when absent; throws when several match).
export function sampleValue(samples, name, labels = {}) {
    const want = JSON.stringify(Object.entries(labels).sort());
    const hits = samples.filter(([n, l]) => n === name && JSON.stringify(Object.entries(l).sort()) === want);
    if (hits.length > 1) throw new Error(`${hits.length} samples ${name}${JSON.stringify(labels)}`);
    return hits.length ? hits[0][2] : undefined;
}

// Every non-empty line of a file parsed as JSON (a missing file is []); throws naming a bad line.
export function jsonLines(file) {
    let text;
    try { text = fs.readFileSync(file, 'utf8'); } catch (e) { if (e.code === 'ENOENT') return []; throw e; }
    if (text && !text.endsWith('\n')) throw new Error(`${file} ends inside a line: ${JSON.stringify(text.slice(-200))}`);
    return text.split('\n').filter((l) => l !== '').map((l, i) => {
        try { return JSON.parse(l); } catch (e) { throw new Error(`${file} line ${i + 1} is not JSON (${e.message}): ${l}`); }
    });
}

// Polls until fn() returns a truthy value; returns it. Throws with describe() after timeoutMs.
export async function waitUntil(fn, { timeoutMs = 5000, describe = () => '' } = {}) {
    const deadline = Date.now() + timeoutMs * TIME_SCALE;
    for (;;) {
        const v = await fn();
        if (v) return v;
        if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms ${describe()}`);
        await sleep(20);
    }
}
