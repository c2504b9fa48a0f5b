// bench/sse_bench.js: the SSE upstream and the N SSE clients of bench/sse. Run by bench/sse.
//
//   node sse_bench.js --upstream-port P --target-port Q [--pids 1,2] [--label mcpeek]
//
// The main process is the clients and the conductor; it forks itself (--role upstream) as the
// upstream and steers it over the fork IPC channel. Two processes because one would need 2 fds
// per stream (RLIMIT_NOFILE may be capped at 20000 here). Both stamp events with
// process.hrtime (CLOCK_MONOTONIC, one clock for the whole machine), so relay lag is exact.
// Phases: warm-up JSON calls -> open N streams through the target (POST /mcp, Accept:
// text/event-stream; the upstream answers 200 text/event-stream, sends ": ready" and holds the
// stream) -> RSS of --pids before/after -> idle CPU/wakeups over SSE_IDLE_SECONDS -> one paced
// event per stream (relay lag) -> one burst event on every stream at once -> upstream ends every
// stream, clients must see the end -> RSS after close. Prints a report and one "SSE_RESULT {json}"
// line. Everything is bounded by SSE_TIMEOUT seconds.
'use strict';
const http = require('http');
const net = require('net');
const fs = require('fs');
const { fork } = require('child_process');

function arg(name, def) {
    const i = process.argv.indexOf('--' + name);
    return i >= 0 ? process.argv[i + 1] : def;
}
const N = parseInt(process.env.SSE_STREAMS || '10000', 10);
const IDLE_S = parseFloat(process.env.SSE_IDLE_SECONDS || '10');
const SEND_S = parseFloat(process.env.SSE_SEND_SECONDS || '5');
const CONCURRENCY = parseInt(process.env.SSE_CONNECT_CONCURRENCY || '200', 10);
const TIMEOUT_S = parseFloat(process.env.SSE_TIMEOUT || '300');
const UP_PORT = parseInt(arg('upstream-port'), 10);
const TARGET_PORT = parseInt(arg('target-port'), 10);
const PIDS = (arg('pids', '') || '').split(',').filter(Boolean).map(Number);
const LABEL = arg('label', 'target');
const ROLE = arg('role', 'main');

const t0 = Date.now();
const say = (m) => process.stderr.write(`[sse ${LABEL}${ROLE === 'main' ? '' : '/' + ROLE} +${((Date.now() - t0) / 1000).toFixed(1)}s] ${m}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => process.hrtime.bigint();
setTimeout(() => {
    say(`global timeout ${TIMEOUT_S}s reached`);
    process.exit(3);
}, TIMEOUT_S * 1000).unref();

// ---- /proc accounting ---------------------------------------------------------------------------
function tasksOf(pid) {
    try {
        return fs.readdirSync(`/proc/${pid}/task`);
    } catch {
        return [];
    }
}
function rssKiB() {
    let t = 0;
    for (const p of PIDS) {
        const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${p}/status`, 'utf8'));
        if (m) t += Number(m[1]);
    }
    return t;
}
// CPU time in ns (schedstat, per thread) and context switches (wakeups) summed over all threads.
function cpuSample() {
    let ns = 0n;
    let csw = 0;
    for (const p of PIDS) {
        for (const tid of tasksOf(p)) {
            try {
                ns += BigInt(fs.readFileSync(`/proc/${p}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
                const st = fs.readFileSync(`/proc/${p}/task/${tid}/status`, 'utf8');
                csw += Number(/voluntary_ctxt_switches:\s+(\d+)/.exec(st)[1]);
                csw += Number(/nonvoluntary_ctxt_switches:\s+(\d+)/.exec(st)[1]);
            } catch {
                /* thread gone */
            }
        }
    }
    return { ns, csw };
}
function threadCount() {
    return PIDS.reduce((a, p) => a + tasksOf(p).length, 0);
}

// ---- upstream -----------------------------------------------------------------------------------
// A raw HTTP/1.1 server on net sockets rather than the http module: socket.write() goes to the
// kernel at once (http.ServerResponse corks until the next tick), so an event's timestamp is
// taken right before its bytes leave. Bodies must come with Content-Length (proxies buffer them).
const streams = new Array(N).fill(null); // upstream side: the socket holding stream i
let upstreamStreams = 0;
const chunk = (s) => `${Buffer.byteLength(s).toString(16)}\r\n${s}\r\n`;
const upstream = net.createServer({ noDelay: true }, (sock) => {
    sock.setNoDelay(true);
    let buf = Buffer.alloc(0);
    let need = -1; // body bytes still wanted for the current request
    let headEnd = -1;
    sock.on('error', () => {});
    sock.on('close', () => {
        if (sock.streamId !== undefined && streams[sock.streamId] === sock) streams[sock.streamId] = null;
    });
    sock.on('data', (d) => {
        buf = buf.length ? Buffer.concat([buf, d]) : d;
        for (;;) {
            if (need < 0) {
                headEnd = buf.indexOf('\r\n\r\n');
                if (headEnd < 0) return;
                const head = buf.subarray(0, headEnd).toString('latin1');
                const m = /\r\ncontent-length:\s*(\d+)/i.exec(head);
                if (!m) {
                    sock.end('HTTP/1.1 411 Length Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
                    return;
                }
                need = Number(m[1]);
                sock.sessionId = (/\r\nmcp-session-id:\s*([^\r]*)/i.exec(head) || [])[1] || 'none';
            }
            if (buf.length < headEnd + 4 + need) return;
            const body = buf.subarray(headEnd + 4, headEnd + 4 + need).toString('utf8');
            buf = buf.subarray(headEnd + 4 + need);
            need = -1;
            let msg = {};
            try {
                msg = JSON.parse(body);
            } catch {
                /* answered below */
            }
            if (msg.method === 'tools/call' && msg.params && msg.params.name === 'watch') {
                sock.write('HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n' +
                    `Mcp-Session-Id: ${sock.sessionId}\r\nTransfer-Encoding: chunked\r\n\r\n` + chunk(': ready\n\n'));
                sock.streamId = msg.id;
                streams[msg.id] = sock;
                upstreamStreams++;
                return; // the stream owns the connection from now on
            }
            const out = JSON.stringify({ jsonrpc: '2.0', id: msg.id ?? null, result: { content: [] } });
            sock.write('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n' +
                `Content-Length: ${Buffer.byteLength(out)}\r\n\r\n${out}`);
        }
    });
});
function streamEnd(i) {
    const s = streams[i];
    if (s) s.write('0\r\n\r\n');
}

// Upstream role: serve, and obey the conductor's commands over IPC.
async function upstreamMain() {
    process.on('disconnect', () => process.exit(0));
    await new Promise((r) => upstream.listen(UP_PORT, '127.0.0.1', 4096, r));
    process.on('message', async (m) => {
        if (m.cmd === 'count') {
            process.send({ streams: streams.filter(Boolean).length, opened: upstreamStreams });
        } else if (m.cmd === 'paced') {
            // One event per listed stream, spread over m.seconds in 1 ms ticks.
            const ids = m.ids;
            const perTick = Math.max(1, Math.ceil(ids.length / (m.seconds * 1000)));
            let sent = 0;
            for (let k = 0; k < ids.length; k += perTick) {
                for (let j = k; j < Math.min(ids.length, k + perTick); j++) if (sendEvent(ids[j], m.seq)) sent++;
                await sleep(1);
            }
            process.send({ sent });
        } else if (m.cmd === 'burst') {
            let sent = 0;
            const tb = now();
            for (const i of m.ids) if (sendEvent(i, m.seq)) sent++;
            process.send({ sent, write_loop_ms: Number(now() - tb) / 1e6 });
        } else if (m.cmd === 'end') {
            let ended = 0;
            for (const i of m.ids) if (streams[i]) { streamEnd(i); ended++; }
            process.send({ ended });
        }
    });
    process.send({ listening: true });
}

// Conductor side of the IPC channel: one request at a time, answered in order.
let child = null;
const pending = [];
function ask(msg) {
    return new Promise((resolve) => {
        pending.push(resolve);
        child.send(msg);
    });
}

// ---- clients ------------------------------------------------------------------------------------
const META = {
    'openai/session': 'v1/abc123def456ghi789jkl012mno345pq',
    'openai/subject': 'v1/user_xyz98765432109876543210',
    'openai/organization': 'v1/org_4f3e2d1c0b9a8f7e6d5c',
    'openai/locale': 'en-US',
    'openai/userAgent': 'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36',
    'openai/userLocation': { city: 'Vũng Tàu', country: 'VN', latitude: '10.34599', longitude: '107.08426', timezone: 'Asia/Ho_Chi_Minh' },
};
function requestBytes(id, tool) {
    const body = Buffer.from(JSON.stringify({
        jsonrpc: '2.0', id, method: 'tools/call', params: { name: tool, arguments: {}, _meta: META },
    }));
    const head = `POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:${TARGET_PORT}\r\n` +
        'Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n' +
        `Mcp-Session-Id: sse-bench-${id}\r\nMCP-Protocol-Version: 2025-06-18\r\n` +
        `Content-Length: ${body.length}\r\n\r\n`;
    return Buffer.concat([Buffer.from(head), body]);
}

// One SSE client over a raw socket: HTTP/1.1 response head, then chunked or raw body, then SSE.
class Client {
    constructor(id) {
        this.id = id;
        this.head = null; // response head text once complete
        this.buf = Buffer.alloc(0); // undecoded bytes
        this.text = ''; // decoded SSE text not yet split into events
        this.chunked = false;
        this.chunkLeft = -1; // bytes left in current chunk, -1 = expecting size line
        this.ready = false;
        this.ended = false;
        this.closed = false;
        this.idleBytes = 0;
    }
    start() {
        return new Promise((resolve) => {
            this.onReady = resolve;
            const s = (this.sock = net.connect(TARGET_PORT, '127.0.0.1'));
            s.setNoDelay(true);
            s.on('connect', () => s.write(requestBytes(this.id, 'watch')));
            s.on('data', (d) => this.onData(d, now()));
            s.on('error', (e) => {
                this.error = this.error || e.code || String(e);
            });
            s.on('close', () => {
                this.closed = true;
                if (!this.ready) this.onReady(false);
            });
        });
    }
    onData(d, t) {
        if (idlePhase) this.idleBytes += d.length;
        this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
        if (!this.head) {
            const i = this.buf.indexOf('\r\n\r\n');
            if (i < 0) return;
            this.head = this.buf.subarray(0, i).toString('latin1');
            this.buf = this.buf.subarray(i + 4);
            this.status = Number(this.head.split(' ')[1]);
            this.chunked = /\r\ntransfer-encoding:\s*chunked/i.test(this.head);
            if (this.status !== 200 || !/\r\ncontent-type:\s*text\/event-stream/i.test(this.head)) {
                this.error = `status ${this.status}`;
                this.sock.destroy();
                return;
            }
        }
        if (this.chunked) this.decodeChunks();
        else {
            this.text += this.buf.toString('utf8');
            this.buf = Buffer.alloc(0);
        }
        this.parseEvents(t);
    }
    decodeChunks() {
        for (;;) {
            if (this.chunkLeft < 0) {
                const i = this.buf.indexOf('\r\n');
                if (i < 0) return;
                this.chunkLeft = parseInt(this.buf.subarray(0, i).toString('latin1'), 16);
                this.buf = this.buf.subarray(i + 2);
                if (this.chunkLeft === 0) {
                    this.ended = true;
                    return;
                }
            }
            if (this.buf.length < this.chunkLeft + 2) {
                if (this.buf.length > this.chunkLeft) return;
                this.text += this.buf.toString('utf8');
                this.chunkLeft -= this.buf.length;
                this.buf = Buffer.alloc(0);
                return;
            }
            this.text += this.buf.subarray(0, this.chunkLeft).toString('utf8');
            this.buf = this.buf.subarray(this.chunkLeft + 2);
            this.chunkLeft = -1;
        }
    }
    parseEvents(t) {
        let i;
        while ((i = this.text.indexOf('\n\n')) >= 0) {
            const ev = this.text.slice(0, i);
            this.text = this.text.slice(i + 2);
            if (ev.startsWith(': ready')) {
                if (!this.ready) {
                    this.ready = true;
                    this.onReady(true);
                }
                continue;
            }
            const m = /"t":"(\d+)"/.exec(ev);
            if (m) {
                if (nLags < lags.length) lags[nLags++] = Number(t - BigInt(m[1])) / 1000;
                eventsReceived++;
                if (waiter && eventsReceived >= waiter.n) waiter.resolve();
            }
        }
    }
}

let idlePhase = false;
let eventsReceived = 0;
const lags = new Float64Array(N * 2); // relay lag in us of each timed event of the current phase
let nLags = 0;
let waiter = null;
function waitEvents(n, ms) {
    if (eventsReceived >= n) return Promise.resolve(true);
    return new Promise((resolve) => {
        const timer = setTimeout(() => {
            waiter = null;
            resolve(false);
        }, ms);
        waiter = { n, resolve: () => { clearTimeout(timer); waiter = null; resolve(true); } };
    });
}

async function jsonCall(id) {
    return new Promise((resolve, reject) => {
        const req = http.request({
            host: '127.0.0.1', port: TARGET_PORT, path: '/mcp', method: 'POST', agent: keepAlive,
            headers: { 'Content-Type': 'application/json', Accept: 'application/json, text/event-stream' },
        }, (res) => {
            res.resume();
            res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`status ${res.statusCode}`))));
        });
        req.on('error', reject);
        req.end(JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'ping', _meta: META } }));
    });
}
const keepAlive = new http.Agent({ keepAlive: true, maxSockets: 8 });

function pct(sorted, p) {
    if (!sorted.length) return NaN;
    return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}
function lagStats() {
    const all = lags.slice(0, nLags).sort();
    nLags = 0;
    return { n: all.length, p50_us: pct(all, 50), p90_us: pct(all, 90), p99_us: pct(all, 99), max_us: all[all.length - 1] };
}
const EVENT_PREFIX = 'event: message\ndata: {"jsonrpc":"2.0","method":"notifications/message",' +
    '"params":{"level":"info","logger":"bench","data":{"seq":';
function sendEvent(i, seq) {
    const s = streams[i];
    if (!s) return false;
    // The timestamp is taken last, right before the bytes go to the kernel.
    s.write(chunk(`${EVENT_PREFIX}${seq},"t":"${now()}"}}}\n\n`));
    return true;
}

let finished = false;
async function main() {
    child = fork(__filename, [...process.argv.slice(2), '--role', 'upstream'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    child.on('message', (m) => pending.shift()(m));
    child.on('exit', (code) => {
        if (!finished) {
            say(`upstream process exited (${code})`);
            process.exit(2);
        }
    });
    await new Promise((r) => pending.push(r));
    const result = { label: LABEL, streams_wanted: N, pids: PIDS };

    for (let i = 0; i < 200; i++) await jsonCall(1000000 + i);
    keepAlive.destroy();
    await sleep(500);
    const rss0 = PIDS.length ? rssKiB() : 0;
    result.threads = threadCount();

    // Open N streams, CONCURRENCY connecting at a time.
    const clients = [];
    for (let i = 0; i < N; i++) clients.push(new Client(i));
    let next = 0;
    let ok = 0;
    const tOpen = Date.now();
    async function opener() {
        while (next < N) {
            const c = clients[next++];
            if (await c.start()) ok++;
        }
    }
    await Promise.all(Array.from({ length: Math.min(CONCURRENCY, N) }, opener));
    result.open_seconds = (Date.now() - tOpen) / 1000;
    result.streams_open = ok;
    const errs = {};
    for (const c of clients) if (c.error) errs[c.error] = (errs[c.error] || 0) + 1;
    result.open_errors = errs;
    const held = await ask({ cmd: 'count' });
    result.upstream_streams = held.streams;
    say(`${ok}/${N} streams open in ${result.open_seconds}s (upstream holds ${held.streams})` +
        (Object.keys(errs).length ? ` errors ${JSON.stringify(errs)}` : ''));
    await sleep(2000);
    if (PIDS.length) {
        const rss1 = rssKiB();
        result.rss_before_kib = rss0;
        result.rss_streams_kib = rss1;
        result.rss_per_stream_kib = ok ? (rss1 - rss0) / ok : NaN;
    }

    // Idle: nothing moves for IDLE_S seconds.
    idlePhase = true;
    const c0 = PIDS.length ? cpuSample() : null;
    const ti = now();
    // Per-second CPU too, to tell a steady tick from leftover work at the start of the window.
    const perSecond = [];
    let prev = c0;
    while (Number(now() - ti) < IDLE_S * 1e9 - 5e8) {
        await sleep(1000);
        if (!PIDS.length) continue;
        const c = cpuSample();
        perSecond.push(Number(c.ns - prev.ns) / 1e6);
        prev = c;
    }
    await sleep(Math.max(0, IDLE_S * 1000 - Number(now() - ti) / 1e6));
    result.idle_cpu_ms_per_second = perSecond.map((x) => Math.round(x * 10) / 10);
    const tail = perSecond.slice(Math.floor(perSecond.length / 2));
    result.idle_cpu_pct_second_half = tail.length ? tail.reduce((a, b) => a + b, 0) / tail.length / 10 : NaN;
    if (PIDS.length) {
        const c1 = cpuSample();
        const wall = Number(now() - ti);
        result.idle_seconds = wall / 1e9;
        result.idle_cpu_pct = (100 * Number(c1.ns - c0.ns)) / wall;
        result.idle_cpu_ms = Number(c1.ns - c0.ns) / 1e6;
        result.idle_wakeups_per_s = (c1.csw - c0.csw) / (wall / 1e9);
    }
    idlePhase = false;
    result.idle_bytes_to_clients = clients.reduce((a, c) => a + c.idleBytes, 0);
    const alive = clients.filter((c) => c.ready && !c.closed && !c.ended).length;
    result.streams_alive_after_idle = alive;

    // Paced: one event per stream, spread over SEND_S seconds by the upstream.
    const live = [];
    for (let i = 0; i < N; i++) if (clients[i].ready && !clients[i].closed && !clients[i].ended) live.push(i);
    const base = eventsReceived;
    nLags = 0;
    const cPaced0 = PIDS.length ? cpuSample() : null;
    const tp = now();
    const paced = await ask({ cmd: 'paced', ids: live, seq: 1, seconds: SEND_S });
    const pacedOk = await waitEvents(base + paced.sent, 10000);
    result.paced = { sent: paced.sent, received: eventsReceived - base, complete: pacedOk, seconds: Number(now() - tp) / 1e9, ...lagStats() };
    if (PIDS.length) {
        const c1 = cpuSample();
        result.paced.cpu_us_per_event = paced.sent ? Number(c1.ns - cPaced0.ns) / 1000 / paced.sent : NaN;
    }

    // Burst: one event on every stream, written by the upstream in one synchronous loop.
    await sleep(500);
    const base2 = eventsReceived;
    const tb = now();
    const burst = await ask({ cmd: 'burst', ids: live, seq: 2 });
    const burstOk = await waitEvents(base2 + burst.sent, 20000);
    result.burst = {
        sent: burst.sent, received: eventsReceived - base2, complete: burstOk, write_loop_ms: burst.write_loop_ms,
        all_received_ms: Number(now() - tb) / 1e6, ...lagStats(),
    };

    // Upstream ends every stream; every client must see the end of its response.
    await ask({ cmd: 'end', ids: live });
    const tEnd = Date.now();
    while (Date.now() - tEnd < 15000) {
        if (clients.every((c) => !c.ready || c.ended || c.closed)) break;
        await sleep(50);
    }
    result.streams_ended_cleanly = clients.filter((c) => c.ended).length;
    result.streams_closed_without_end = clients.filter((c) => c.ready && !c.ended && c.closed).length;
    for (const c of clients) if (c.sock) c.sock.destroy();
    finished = true;
    child.disconnect();
    await sleep(2000);
    if (PIDS.length) result.rss_after_close_kib = rssKiB();

    report(result);
    process.exit(0);
}

function f(x, d = 1) {
    return Number.isFinite(x) ? x.toFixed(d) : '-';
}
function report(r) {
    const mark = (ok) => (ok ? 'ok  ' : 'MISS');
    const out = [];
    out.push(`== ${r.label}: ${r.streams_open}/${r.streams_wanted} SSE streams open (in ${f(r.open_seconds)} s)` +
        (Object.keys(r.open_errors).length ? `, errors ${JSON.stringify(r.open_errors)}` : ''));
    if (PIDS.length) {
        out.push(`   RSS             ${r.rss_before_kib} KiB idle -> ${r.rss_streams_kib} KiB with streams -> ${r.rss_after_close_kib} KiB after close (${r.threads} threads)`);
        out.push(`   ${mark(r.rss_per_stream_kib <= 16)} RSS/stream  ${f(r.rss_per_stream_kib, 2)} KiB   (target <= 16 KiB)`);
        out.push(`   ${mark(r.idle_cpu_pct_second_half < 0.5)} idle CPU    ${f(r.idle_cpu_pct_second_half, 3)} % of a core in the second half of the idle window; whole window ${f(r.idle_cpu_pct, 3)} % over ${f(r.idle_seconds)} s (${f(r.idle_cpu_ms)} ms CPU, ${f(r.idle_wakeups_per_s)} wakeups/s)   (target ~0)`);
        out.push(`        idle CPU ms per second: ${r.idle_cpu_ms_per_second.join(' ')}`);
    }
    out.push(`   streams alive after idle ${r.streams_alive_after_idle}/${r.streams_open}, bytes to clients while idle ${r.idle_bytes_to_clients}`);
    const p = r.paced;
    out.push(`   ${mark(p.p99_us < 1000 && p.complete)} relay lag   paced ${p.received}/${p.sent} events over ${f(p.seconds)} s: p50 ${f(p.p50_us)} us  p90 ${f(p.p90_us)} us  p99 ${f(p.p99_us)} us  max ${f(p.max_us)} us   (target p99 < 1 ms)` +
        (PIDS.length ? `; proxy CPU ${f(p.cpu_us_per_event)} us/event` : ''));
    const b = r.burst;
    out.push(`        burst       ${b.received}/${b.sent} events written in ${f(b.write_loop_ms)} ms, all received after ${f(b.all_received_ms)} ms: p50 ${f(b.p50_us / 1000, 2)} ms  p99 ${f(b.p99_us / 1000, 2)} ms`);
    out.push(`   end of stream     ${r.streams_ended_cleanly} ended cleanly, ${r.streams_closed_without_end} closed without a terminating chunk`);
    console.log(out.join('\n'));
    console.log('SSE_RESULT ' + JSON.stringify(r));
}

(ROLE === 'upstream' ? upstreamMain() : main()).catch((e) => {
    say(`failed: ${e.stack || e}`);
    process.exit(2);
});
