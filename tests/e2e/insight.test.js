// What issue 13 adds on top of relaying: answers read as they pass (JSON-RPC errors, isError
// results, server requests inside SSE, the response_inspect_max bound, bytes relayed exactly),
// one "conversation" line per ChatGPT conversation (idle, delete, shutdown, pseudonymized), and
// rate limits per user (429 with Retry-After, kept across SIGHUP).
// mcpeek runs in front of scripted node upstreams; every test checks exact log lines and, where
// the behaviour has one, the metric on the admin port. Every process is stopped at teardown.
// Behaviour under test: docs/logging.md, docs/metrics.md, docs/configuration.md.

import assert from 'node:assert/strict';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import test from 'node:test';
import {
    DIRECT, expectFields, fmtLines, freePort, parseSse, POST_HEADERS, request, sleep, startMcpeek,
} from './lib/harness.js';
import { jsonResult, startScriptedUpstream } from './lib/scripted-upstream.js';
import {
    jsonLines, sampleValue, scrape, startWithConfig, tempDir, waitUntil, writeConf,
} from './lib/ops.js';

const skip = DIRECT ? 'needs mcpeek itself (MCPEEK_E2E_DIRECT=1)' : false;

const rpc = (id, method, params) => JSON.stringify({ jsonrpc: '2.0', id, method, ...(params ? { params } : {}) });
const toolCall = (id, name, meta) => rpc(id, 'tools/call', { name, arguments: {}, ...(meta ? { _meta: meta } : {}) });
const chatgpt = ({ session, subject, org = 'v1/org_1', locale = 'en-US' }) => ({
    'openai/session': session, 'openai/subject': subject, 'openai/organization': org, 'openai/locale': locale,
});

function keepAlive(t) {
    const agent = new http.Agent({ keepAlive: true });
    t.after(() => agent.destroy());
    return agent;
}

const post = (url, body, { headers = [], agent } = {}) =>
    request(url, { method: 'POST', headers: [...POST_HEADERS, ...headers], body, agent });

const sha256 = (buf) => createHash('sha256').update(buf).digest('hex');
const mcpLines = (lines) => lines.filter((l) => l.msg === 'mcp');
const convLines = (lines) => lines.filter((l) => l.msg === 'conversation');
const byRpcId = (lines, id) => {
    const hits = mcpLines(lines).filter((l) => JSON.stringify(l.rpc_id) === JSON.stringify(id));
    assert.equal(hits.length, 1, `exactly one line for rpc_id ${JSON.stringify(id)}:\n${fmtLines(lines)}`);
    return hits[0];
};

// Writes buf to res in pieces cut at the given byte offsets, each piece in its own write a
// little after the previous one (so mcpeek reads them separately), then ends the response.
async function writeInPieces(res, buf, cuts) {
    let at = 0;
    for (const cut of [...cuts].sort((a, b) => a - b)) {
        if (cut <= at || cut >= buf.length) continue;
        res.write(buf.subarray(at, cut));
        at = cut;
        await sleep(15);
    }
    res.end(buf.subarray(at));
}

// Offsets into buf that fall inside multi-byte UTF-8 characters (continuation bytes).
function insideCharacters(buf) {
    const out = [];
    for (let i = 1; i < buf.length; i++) if ((buf[i] & 0xc0) === 0x80) out.push(i);
    return out;
}

async function setup(t, handler, opts = {}) {
    const up = await startScriptedUpstream(t, handler);
    const adminPort = DIRECT ? undefined : await freePort();
    const proxy = await startMcpeek(t, up.url, { adminPort, ...opts });
    return { up, proxy, adminPort };
}

// ---- 1. answers read as they pass ------------------------------------------------------------

test('json_rpc_error_answer_is_logged_and_counted', { skip }, async (t) => {
    const longMessage = `Unknown tool: ${'é'.repeat(300)}`; // 614 bytes, capped at 256 in the log
    const { up, proxy, adminPort } = await setup(t, (req, res, body) => {
        const msg = JSON.parse(body.toString());
        const reply = (obj) => {
            const out = JSON.stringify(obj);
            res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(out) });
            res.end(out);
        };
        if (msg.params?.name === 'nope') reply({ jsonrpc: '2.0', id: msg.id, error: { code: -32602, message: 'Unknown tool: nope' } });
        else if (msg.params?.name === 'wordy') reply({ jsonrpc: '2.0', id: msg.id, error: { code: -32602, message: longMessage } });
        else if (msg.method === 'prompts/get') reply({ jsonrpc: '2.0', id: msg.id, error: { code: -32601, message: 'Method not found' } });
        else jsonResult(res, body, { content: [{ type: 'text', text: 'fine' }] });
    });
    const agent = keepAlive(t);
    const r1 = await post(proxy.url, toolCall(1, 'nope'), { agent });
    assert.equal(r1.status, 200);
    assert.deepEqual(r1.json().error, { code: -32602, message: 'Unknown tool: nope' }, 'the error reaches the client as is');
    await post(proxy.url, toolCall('two', 'nope'), { agent });
    await post(proxy.url, rpc(3, 'prompts/get', { name: 'p' }), { agent });
    await post(proxy.url, toolCall(4, 'fine'), { agent });
    await post(proxy.url, toolCall(5, 'wordy'), { agent });
    assert.equal(up.requests.length, 5);

    const lines = await proxy.expectLogCount(5);
    expectFields(byRpcId(lines, 1), {
        status: 200, response: 'json', rpc_method: 'tools/call', tool: 'nope',
        rpc_error_code: -32602, rpc_error_message: 'Unknown tool: nope', level: 'info',
    }, 'tools/call answered with a JSON-RPC error');
    assert.equal(byRpcId(lines, 1).error, undefined, 'an upstream JSON-RPC error is not an mcpeek error');
    assert.equal(byRpcId(lines, 1).response_inspected, undefined, 'never written as true');
    expectFields(byRpcId(lines, 'two'), { rpc_error_code: -32602, rpc_error_message: 'Unknown tool: nope' }, 'string id');
    expectFields(byRpcId(lines, 3), { rpc_method: 'prompts/get', rpc_error_code: -32601, rpc_error_message: 'Method not found' });
    const fine = byRpcId(lines, 4);
    for (const k of ['rpc_error_code', 'rpc_error_message', 'tool_is_error', 'server_requests', 'response_inspected']) {
        assert.equal(fine[k], undefined, `a plain result has no ${k}: ${JSON.stringify(fine)}`);
    }
    const wordy = byRpcId(lines, 5);
    assert.equal(wordy.rpc_error_code, -32602);
    assert.ok(wordy.rpc_error_message.endsWith('...'), `capped message ends in ...: ${wordy.rpc_error_message}`);
    const kept = wordy.rpc_error_message.slice(0, -3);
    assert.equal(Buffer.byteLength(kept), 256, 'the first 256 bytes are kept (log_value_max_length)');
    assert.ok(longMessage.startsWith(kept), 'cut on a character boundary');

    const { samples } = await scrape(adminPort);
    assert.equal(sampleValue(samples, 'mcpeek_rpc_errors_total', { rpc_method: 'tools/call', tool: 'nope', code: '-32602' }), 2);
    assert.equal(sampleValue(samples, 'mcpeek_rpc_errors_total', { rpc_method: 'tools/call', tool: 'wordy', code: '-32602' }), 1);
    assert.equal(sampleValue(samples, 'mcpeek_rpc_errors_total', { rpc_method: 'prompts/get', tool: '', code: '-32601' }), 1);
    assert.equal(sampleValue(samples, 'mcpeek_rpc_errors_total', { rpc_method: 'tools/call', tool: 'fine', code: '-32602' }), undefined);
    assert.equal(samples.filter(([n]) => n === 'mcpeek_rpc_errors_total').length, 3,
        `no other rpc error series: ${JSON.stringify(samples.filter(([n]) => n === 'mcpeek_rpc_errors_total'))}`);
});

test('tool_result_with_is_error_is_logged_and_counted', { skip }, async (t) => {
    const { proxy, adminPort } = await setup(t, (req, res, body) => {
        const msg = JSON.parse(body.toString());
        const isError = msg.params?.name === 'failing' || msg.method === 'resources/read';
        jsonResult(res, body, { content: [{ type: 'text', text: 'x' }], ...(isError || msg.params?.name === 'ok' ? { isError } : {}) });
    });
    const agent = keepAlive(t);
    for (const [id, body] of [[1, toolCall(1, 'failing')], [2, toolCall(2, 'failing')], [3, toolCall(3, 'ok')],
        [4, rpc(4, 'resources/read', { uri: 'file:///x' })]]) {
        const r = await post(proxy.url, body, { agent });
        assert.equal(r.status, 200);
        assert.equal(r.json().id, id);
    }
    const lines = await proxy.expectLogCount(4);
    for (const id of [1, 2]) {
        expectFields(byRpcId(lines, id), { tool: 'failing', tool_is_error: true, status: 200, level: 'info' });
        assert.equal(byRpcId(lines, id).rpc_error_code, undefined, 'isError is not a JSON-RPC error');
    }
    assert.equal(byRpcId(lines, 3).tool_is_error, undefined, 'isError: false is never written');
    assert.equal(byRpcId(lines, 4).tool_is_error, undefined, 'only tools/call results count');
    const { samples } = await scrape(adminPort);
    assert.equal(sampleValue(samples, 'mcpeek_tool_errors_total', { tool: 'failing' }), 2);
    assert.equal(sampleValue(samples, 'mcpeek_tool_errors_total', { tool: 'ok' }), undefined);
    assert.equal(samples.filter(([n]) => n === 'mcpeek_rpc_errors_total').length, 0, 'no rpc error series');
});

test('sse_answer_with_server_requests_then_the_error_split_at_odd_places', { skip }, async (t) => {
    const events = [
        'event: message\ndata: {"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"p","progress":1}}\n\n',
        'id: 1\nevent: message\ndata: {"jsonrpc":"2.0","id":"s-1","method":"sampling/createMessage","params":{"messages":[],"maxTokens":5}}\n\n',
        ': a comment line\r\nid: 2\r\ndata: {"jsonrpc":"2.0","id":42,"method":"elicitation/create",\r\ndata: "params":{"message":"Name?","requestedSchema":{"type":"object"}}}\r\n\r\n',
        // An error for the string "42": not this request's id (42, a number).
        'data: {"jsonrpc":"2.0","id":"42","error":{"code":-32099,"message":"decoy"}}\n\n',
        'id: 3\ndata: {"jsonrpc":"2.0","id":42,\ndata:  "error":{"code":-32000,"message":"Sampling refused by the user"}}\n\n',
    ];
    const sent = Buffer.from(events.join(''));
    const text = sent.toString();
    const cuts = [
        text.indexOf('data:') + 2, // inside the field name "data"
        text.indexOf('\n\n') + 1, // between the two newlines ending the first event
        text.indexOf('sampling/') + 4,
        text.indexOf('\r\n\r\n') + 1, // inside CR LF CR LF
        text.indexOf('\r\n\r\n') + 3,
        text.indexOf('-32000') + 3, // inside the error code
        text.indexOf('"error":{"code":-32000') - 2,
        text.length - 1, // the last newline alone
    ];
    const { proxy, adminPort } = await setup(t, (req, res) => {
        res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
        writeInPieces(res, sent, cuts);
    });
    const r = await post(proxy.url, toolCall(42, 'ask'));
    assert.equal(r.status, 200);
    assert.equal(sha256(r.body), sha256(sent), 'the SSE bytes reach the client unchanged');
    assert.equal(parseSse(r.text()).length, 5);
    const [l] = await proxy.expectLogCount(1);
    expectFields(l, {
        status: 200, response: 'sse', sse_events: 5, rpc_method: 'tools/call', tool: 'ask', rpc_id: 42,
        server_requests: 2, rpc_error_code: -32000, rpc_error_message: 'Sampling refused by the user',
    }, 'SSE answer');
    assert.equal(l.response_inspected, undefined, JSON.stringify(l));
    const { samples } = await scrape(adminPort);
    assert.equal(sampleValue(samples, 'mcpeek_rpc_errors_total', { rpc_method: 'tools/call', tool: 'ask', code: '-32000' }), 1);
    assert.equal(sampleValue(samples, 'mcpeek_rpc_errors_total', { rpc_method: 'tools/call', tool: 'ask', code: '-32099' }), undefined,
        'the error for another id is not counted');
});

test('answers_beyond_response_inspect_max_are_relayed_but_not_read', { skip }, async (t) => {
    const padding = 'z'.repeat(3000);
    const big = Buffer.from(JSON.stringify({ jsonrpc: '2.0', id: 1, error: { code: -32001, message: 'big', data: padding } }));
    const small = Buffer.from(JSON.stringify({ jsonrpc: '2.0', id: 2, error: { code: -32002, message: 'small' } }));
    const sse = Buffer.from(
        `data: ${JSON.stringify({ jsonrpc: '2.0', id: 'srv', method: 'roots/list', params: { pad: padding } })}\n\n` +
        `data: ${JSON.stringify({ jsonrpc: '2.0', id: 'srv2', method: 'roots/list' })}\n\n` +
        `data: ${JSON.stringify({ jsonrpc: '2.0', id: 3, error: { code: -32003, message: 'after the big event' } })}\n\n`);
    const { proxy } = await setup(t, (req, res, body) => {
        const { id } = JSON.parse(body.toString());
        if (id === 3) {
            res.writeHead(200, { 'Content-Type': 'text/event-stream' });
            writeInPieces(res, sse, [700, 1500, 2500]);
            return;
        }
        const out = id === 1 ? big : small;
        res.writeHead(200, { 'Content-Type': 'application/json' }); // chunked: no length known ahead
        writeInPieces(res, out, [500, 1000, 2000]);
    }, { args: ['--response-inspect-max', '1k'] });
    const agent = keepAlive(t);
    const r1 = await post(proxy.url, toolCall(1, 'huge'), { agent });
    assert.equal(sha256(r1.body), sha256(big), 'the big answer is relayed whole');
    const r2 = await post(proxy.url, toolCall(2, 'tiny'), { agent });
    assert.equal(sha256(r2.body), sha256(small));
    const r3 = await post(proxy.url, toolCall(3, 'stream'), { agent });
    assert.equal(sha256(r3.body), sha256(sse));
    const lines = await proxy.expectLogCount(3);
    const l1 = byRpcId(lines, 1);
    expectFields(l1, { status: 200, response: 'json', response_inspected: false, bytes_out: big.length });
    assert.equal(l1.rpc_error_code, undefined, `an unread answer yields no error fields: ${JSON.stringify(l1)}`);
    assert.equal(l1.rpc_error_message, undefined);
    const l2 = byRpcId(lines, 2);
    expectFields(l2, { rpc_error_code: -32002, rpc_error_message: 'small' }, 'an answer under the limit is read');
    assert.equal(l2.response_inspected, undefined);
    expectFields(byRpcId(lines, 3), {
        response: 'sse', sse_events: 3, response_inspected: false, server_requests: 1,
        rpc_error_code: -32003, rpc_error_message: 'after the big event',
    }, 'an oversize SSE event is skipped, the others are read');
});

test('relay_is_byte_exact_for_json_and_sse_with_utf8_split_across_writes', { skip }, async (t) => {
    const words = 'Vũng Tàu — 東京 — Zürich — 🙂🚀 — Ελληνικά — ';
    const jsonAnswer = Buffer.from(JSON.stringify({
        jsonrpc: '2.0', id: 1, result: { content: [{ type: 'text', text: words.repeat(40) }] },
    }));
    const errorAnswer = Buffer.from(JSON.stringify({ jsonrpc: '2.0', id: 2, error: { code: -32010, message: 'Ошибка: 東京 🙂' } }));
    const sseAnswer = Buffer.from(
        `event: message\ndata: ${JSON.stringify({ jsonrpc: '2.0', method: 'notifications/message', params: { data: words } })}\n\n` +
        `event: message\ndata: ${JSON.stringify({ jsonrpc: '2.0', id: 3, result: { content: [{ type: 'text', text: words.repeat(10) }], isError: true } })}\n\n`);
    // Eight cuts inside characters, spread over the answer.
    const utf8Cuts = (buf) => {
        const inside = insideCharacters(buf);
        return Array.from({ length: 8 }, (_, k) => inside[Math.floor((k * inside.length) / 8)]);
    };
    const answers = {
        1: { buf: jsonAnswer, type: 'application/json', length: true },
        2: { buf: errorAnswer, type: 'application/json; charset=utf-8', length: false },
        3: { buf: sseAnswer, type: 'text/event-stream', length: false },
    };
    for (const a of Object.values(answers)) assert.equal(new Set(utf8Cuts(a.buf)).size, 8, 'eight distinct cuts inside characters');
    const { proxy } = await setup(t, (req, res, body) => {
        const a = answers[JSON.parse(body.toString()).id];
        res.writeHead(200, { 'Content-Type': a.type, ...(a.length ? { 'Content-Length': a.buf.length } : {}) });
        writeInPieces(res, a.buf, utf8Cuts(a.buf));
    });
    const agent = keepAlive(t);
    for (const [id, a] of Object.entries(answers)) {
        const r = await post(proxy.url, toolCall(Number(id), 'text'), { agent });
        assert.equal(r.status, 200);
        assert.equal(r.body.length, a.buf.length, `answer ${id}: ${r.body.length} of ${a.buf.length} bytes`);
        assert.equal(sha256(r.body), sha256(a.buf), `answer ${id}: sha256 of what the client received`);
    }
    const lines = await proxy.expectLogCount(3);
    expectFields(byRpcId(lines, 1), { response: 'json', bytes_out: jsonAnswer.length });
    expectFields(byRpcId(lines, 2), { response: 'json', rpc_error_code: -32010, rpc_error_message: 'Ошибка: 東京 🙂' },
        'a message split inside characters is read whole');
    expectFields(byRpcId(lines, 3), { response: 'sse', sse_events: 2, tool_is_error: true, bytes_out: sseAnswer.length });
});

// ---- 2. one line per conversation ------------------------------------------------------------

// Answers like an MCP server: an error for tool "broken", a session id for initialize, 200 to DELETE.
function mcpServer(req, res, body) {
    if (req.method === 'DELETE') { res.writeHead(200); res.end(); return; }
    const msg = JSON.parse(body.toString());
    if (msg.params?.name === 'broken') {
        const out = JSON.stringify({ jsonrpc: '2.0', id: msg.id, error: { code: -32603, message: 'boom' } });
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end(out);
        return;
    }
    jsonResult(res, body, { content: [{ type: 'text', text: `answer to ${msg.id}` }] });
}

test('chatgpt_conversation_across_mcp_sessions_ends_idle', { skip }, async (t) => {
    const { proxy } = await setup(t, mcpServer, { args: ['--conversation-idle-timeout', '2s'] });
    const agent = keepAlive(t);
    const A = chatgpt({ session: 'v1/conv-A', subject: 'v1/user_A' });
    const B = chatgpt({ session: 'v1/conv-B', subject: 'v1/user_B', locale: 'fr-FR' });
    const sid = (n) => [['Mcp-Session-Id', `chatgpt-fresh-${n}`]];
    // ChatGPT: a fresh Mcp-Session-Id per tool call, the same openai/session throughout.
    assert.equal((await post(proxy.url, toolCall(1, 'search', A), { headers: sid(1), agent })).status, 200);
    assert.equal((await post(proxy.url, toolCall(2, 'broken', A), { headers: sid(2), agent })).status, 200);
    assert.equal((await post(proxy.url, toolCall(3, 'search', B), { headers: sid(9), agent })).status, 200);
    assert.equal((await post(proxy.url, toolCall(4, 'fetch', A), { headers: sid(3), agent })).status, 200);
    assert.equal((await post(proxy.url, toolCall(5, 'search', A), { headers: sid(3), agent })).status, 200);
    // A DELETE of one of its MCP sessions: the conversation (keyed by openai/session) goes on.
    const del = await request(proxy.url, { method: 'DELETE', headers: sid(1), agent });
    assert.equal(del.status, 200);
    const lastDone = Date.now();

    let lines = await proxy.waitForLogs(6, (l) => l.msg === 'mcp');
    assert.deepEqual(convLines(lines), [], 'no conversation line before the idle timeout');
    lines = await proxy.waitForLogs(2, (l) => l.msg === 'conversation', 6000);
    const waited = Date.now() - lastDone;
    assert.ok(waited >= 1900, `the conversation lines came ${waited} ms after the last request (idle timeout 2 s)`);
    const mcp = mcpLines(lines);
    assert.equal(mcp.length, 6, fmtLines(lines));
    const ofA = mcp.filter((l) => l.openai_session === 'v1/conv-A');
    assert.equal(ofA.length, 5, `the DELETE line names the conversation from the session map:\n${fmtLines(mcp)}`);
    const convs = convLines(lines);
    assert.equal(convs.length, 2, fmtLines(lines));
    const a = convs.find((l) => l.conversation === 'v1/conv-A');
    const b = convs.find((l) => l.conversation === 'v1/conv-B');
    assert.ok(a && b, fmtLines(convs));
    expectFields(a, {
        level: 'info', msg: 'conversation', reason: 'idle', conversation: 'v1/conv-A', openai_session: 'v1/conv-A',
        openai_subject: 'v1/user_A', openai_org: 'v1/org_1', openai_locale: 'en-US',
        requests: 5, tool_calls: { search: 2, broken: 1, fetch: 1 }, errors: 1, mcp_sessions: 3,
        bytes_in: ofA.reduce((s, l) => s + l.bytes_in, 0), bytes_out: ofA.reduce((s, l) => s + l.bytes_out, 0),
        first_ts: ofA[0].ts, last_ts: ofA[ofA.length - 1].ts,
    }, 'conversation A');
    assert.deepEqual(Object.keys(a.tool_calls), ['search', 'broken', 'fetch'], 'tool_calls in first-call order');
    assert.ok(a.duration_ms >= 0 && a.duration_ms < Date.parse(a.ts) - Date.parse(a.first_ts),
        `duration_ms ${a.duration_ms} excludes the idle wait`);
    assert.ok(Date.parse(a.ts) - Date.parse(a.last_ts) >= 2000, `written after 2 s idle: ${JSON.stringify(a)}`);
    expectFields(b, {
        reason: 'idle', openai_session: 'v1/conv-B', openai_subject: 'v1/user_B', openai_locale: 'fr-FR',
        requests: 1, tool_calls: { search: 1 }, errors: 0, mcp_sessions: 1,
    }, 'conversation B');

    // The same openai/session coming back after the idle end opens a new conversation.
    assert.equal((await post(proxy.url, toolCall(6, 'search', A), { headers: sid(4), agent })).status, 200);
    lines = await proxy.waitForLogs(3, (l) => l.msg === 'conversation', 6000);
    const again = convLines(lines)[2];
    expectFields(again, { conversation: 'v1/conv-A', reason: 'idle', requests: 1, mcp_sessions: 1, tool_calls: { search: 1 } });
});

test('conversation_keyed_by_mcp_session_ends_on_delete', { skip }, async (t) => {
    const { proxy } = await setup(t, mcpServer);
    const agent = keepAlive(t);
    const sid = [['Mcp-Session-Id', 'plain-client-session-1']];
    assert.equal((await post(proxy.url, toolCall(1, 'echo'), { headers: sid, agent })).status, 200);
    assert.equal((await post(proxy.url, rpc(2, 'tools/list'), { headers: sid, agent })).status, 200);
    assert.equal((await post(proxy.url, toolCall(3, 'broken'), { headers: sid, agent })).status, 200);
    // Another client's session stays open.
    assert.equal((await post(proxy.url, toolCall(4, 'echo'), { headers: [['Mcp-Session-Id', 'other']], agent })).status, 200);
    assert.equal((await request(proxy.url, { method: 'DELETE', headers: sid, agent })).status, 200);
    const lines = await proxy.waitForLogs(1, (l) => l.msg === 'conversation');
    await sleep(300);
    const all = proxy.logs();
    assert.equal(all.length, 6, `5 exchange lines and 1 conversation line:\n${fmtLines(all)}`);
    assert.equal(all[5].msg, 'conversation', `the conversation line follows the DELETE's line:\n${fmtLines(all)}`);
    const mine = mcpLines(lines).filter((l) => l.mcp_session_id === 'plain-client-session-1');
    assert.equal(mine.length, 4);
    const [c] = convLines(all);
    expectFields(c, {
        msg: 'conversation', reason: 'delete', conversation: 'plain-client-session-1', requests: 4,
        tool_calls: { echo: 1, broken: 1 }, errors: 1, mcp_sessions: 1,
        bytes_in: mine.reduce((s, l) => s + l.bytes_in, 0), bytes_out: mine.reduce((s, l) => s + l.bytes_out, 0),
        first_ts: mine[0].ts, last_ts: mine[3].ts,
    }, 'conversation ended by DELETE');
    for (const k of ['openai_session', 'openai_subject', 'openai_org', 'openai_locale']) {
        assert.equal(c[k], undefined, `no ${k} without openai hints: ${JSON.stringify(c)}`);
    }
});

test('open_conversations_are_written_at_sigterm_pseudonymized', { skip }, async (t) => {
    const dir = tempDir(t);
    const key = randomBytes(32);
    const keyFile = path.join(dir, 'pseudonymize.key');
    fs.writeFileSync(keyFile, key);
    const up = await startScriptedUpstream(t, mcpServer);
    const port = await freePort();
    const url = `http://127.0.0.1:${port}/mcp`;
    const logFile = path.join(dir, 'access.log');
    const conf = writeConf(path.join(dir, 'mcpeek.conf'), [
        `listen 127.0.0.1:${port}`, `upstream ${up.url}`, `log_file ${logFile}`, 'admin_listen off', 'workers 2',
        `pseudonymize_key_file ${keyFile}`,
    ]);
    const m = await startWithConfig(t, conf, { proxyPort: port });
    m.expectExit();
    const agent = keepAlive(t);
    const C = chatgpt({ session: 'v1/conv-C', subject: 'v1/user_C', org: 'v1/org_C' });
    assert.equal((await post(url, toolCall(1, 'search', C), { headers: [['Mcp-Session-Id', 'c-1']], agent })).status, 200);
    assert.equal((await post(url, toolCall(2, 'search', C), { headers: [['Mcp-Session-Id', 'c-2']], agent })).status, 200);
    assert.equal((await post(url, toolCall(3, 'lookup'), { headers: [['Mcp-Session-Id', 'plain-2']], agent })).status, 200);
    await waitUntil(() => jsonLines(logFile).length >= 3, { describe: () => fmtLines(jsonLines(logFile)) });
    assert.deepEqual(convLines(jsonLines(logFile)), [], 'nothing ended before SIGTERM');
    agent.destroy();
    m.signal('SIGTERM');
    const ex = await m.waitExit(4000);
    assert.deepEqual([ex.code, ex.signal], [0, null], m.stderr());

    const lines = jsonLines(logFile);
    assert.equal(lines.length, 5, fmtLines(lines));
    assert.deepEqual(lines.map((l) => l.msg), ['mcp', 'mcp', 'mcp', 'conversation', 'conversation'],
        'the conversation lines come last');
    const hmac = (v) => `hmac-sha256:${createHmac('sha256', key).update(v).digest('hex')}`;
    const ex1 = byRpcId(lines, 1);
    expectFields(ex1, { openai_subject: hmac('v1/user_C'), openai_org: hmac('v1/org_C') }, 'exchange line pseudonymized');
    const c = convLines(lines).find((l) => l.conversation === 'v1/conv-C');
    const p = convLines(lines).find((l) => l.conversation === 'plain-2');
    assert.ok(c && p, fmtLines(lines));
    expectFields(c, {
        reason: 'shutdown', openai_session: 'v1/conv-C', openai_subject: ex1.openai_subject, openai_org: ex1.openai_org,
        requests: 2, tool_calls: { search: 2 }, mcp_sessions: 2, errors: 0,
    }, 'the conversation line joins the exchange lines on the pseudonym');
    assert.doesNotMatch(JSON.stringify(lines), /user_C|org_C/, 'the raw ids are in no line');
    expectFields(p, { reason: 'shutdown', requests: 1, tool_calls: { lookup: 1 }, mcp_sessions: 1 });
});

// ---- 3. rate limits per user -----------------------------------------------------------------

test('rate_limit_per_subject_refuses_with_429_and_retry_after', { skip }, async (t) => {
    const { up, proxy, adminPort } = await setup(t, mcpServer,
        { args: ['--rate-limit', 'openai_subject 2/s burst 2'] });
    const agent = keepAlive(t);
    const A = chatgpt({ session: 'v1/s-A', subject: 'v1/user_A' });
    const B = chatgpt({ session: 'v1/s-B', subject: 'v1/user_B' });
    const results = [];
    for (const [id, meta] of [[1, A], [2, A], [3, A], [11, B], [12, B], [21, null], [22, null], [23, null], [24, null]]) {
        results.push(await post(proxy.url, toolCall(id, 'search', meta ?? undefined), { agent }));
    }
    assert.deepEqual(results.map((r) => r.status), [200, 200, 429, 200, 200, 200, 200, 200, 200],
        'A: third refused; B and requests without a subject pass');
    const refused = results[2];
    assert.match(refused.headers['retry-after'] ?? '', /^\d+$/, `Retry-After whole seconds: ${JSON.stringify(refused.headers)}`);
    assert.equal(Number(refused.headers['retry-after']), 1, 'at 2/s the next token is at most 0.5 s away: 1 s rounded up');
    assert.match(refused.headers['content-type'] ?? '', /^application\/json/);
    const body = refused.json();
    assert.equal(body.jsonrpc, '2.0');
    assert.equal(body.id, 3, `the error carries the request id: ${refused.text()}`);
    assert.equal(typeof body.error?.code, 'number');
    assert.equal(typeof body.error?.message, 'string');
    assert.deepEqual(up.requests.map((r) => JSON.parse(r.body.toString()).id), [1, 2, 11, 12, 21, 22, 23, 24],
        'the refused request never reached the upstream');

    await sleep(Number(refused.headers['retry-after']) * 1000);
    const later = await post(proxy.url, toolCall(4, 'search', A), { agent });
    assert.equal(later.status, 200, 'after Retry-After, A passes again');

    const lines = await proxy.waitForLogs(10, (l) => l.msg === 'mcp');
    const l3 = byRpcId(lines, 3);
    expectFields(l3, {
        status: 429, error: 'rate_limited', rate_limit: 'openai_subject', level: 'warn', rpc_id: 3,
        openai_subject: 'v1/user_A', rpc_method: 'tools/call', tool: 'search',
    }, 'refused line');
    for (const id of [1, 2, 4, 11, 12, 21, 22, 23, 24]) {
        const l = byRpcId(lines, id);
        assert.equal(l.status, 200, JSON.stringify(l));
        assert.equal(l.rate_limit, undefined, JSON.stringify(l));
        assert.equal(l.error, undefined, JSON.stringify(l));
    }
    const { samples } = await scrape(adminPort);
    assert.equal(sampleValue(samples, 'mcpeek_rate_limited_total', { scope: 'openai_subject' }), 1);
    assert.equal(sampleValue(samples, 'mcpeek_rate_limited_total', { scope: 'client_ip' }), 0);
    assert.equal(sampleValue(samples, 'mcpeek_requests_total', { rpc_method: 'tools/call', tool: 'search', status: '429' }), 1);
});

test('sighup_with_the_same_rate_limit_line_keeps_the_buckets', { skip }, async (t) => {
    const dir = tempDir(t);
    const up = await startScriptedUpstream(t, mcpServer);
    const port = await freePort();
    const admin = await freePort();
    const url = `http://127.0.0.1:${port}/mcp`;
    const logFile = path.join(dir, 'access.log');
    const confLines = (limit) => [
        `listen 127.0.0.1:${port}`, `upstream ${up.url}`, `log_file ${logFile}`, `admin_listen 127.0.0.1:${admin}`,
        'workers 2', `rate_limit ${limit}`,
    ];
    // A slow refill (one token per 30 s), so the bucket stays empty for the whole test.
    const conf = writeConf(path.join(dir, 'mcpeek.conf'), confLines('openai_subject 2/m burst 2'));
    const m = await startWithConfig(t, conf, { proxyPort: port });
    const agent = keepAlive(t);
    const A = chatgpt({ session: 'v1/s-A', subject: 'v1/user_A' });
    const call = (id) => post(url, toolCall(id, 'search', A), { agent });
    assert.deepEqual([(await call(1)).status, (await call(2)).status], [200, 200]);
    const r3 = await call(3);
    assert.equal(r3.status, 429);
    assert.equal(r3.headers['retry-after'], '30', 'at 2/m the next token is 30 s away');

    // Same line, file rewritten (a comment added): the bucket of A is kept.
    writeConf(conf, ['# reloaded', ...confLines('openai_subject 2/m burst 2')]);
    m.signal('SIGHUP');
    await m.waitForDiag(/^configuration reloaded/);
    const r4 = await call(4);
    assert.equal(r4.status, 429, 'A stays limited right after a reload with the same rate_limit line');

    // A changed line is a new limit: its buckets start full.
    writeConf(conf, confLines('openai_subject 3/m burst 2'));
    m.signal('SIGHUP');
    await m.waitForDiag(/^configuration reloaded/, { count: 2 });
    assert.equal((await call(5)).status, 200, 'a changed rate_limit line starts with a full bucket');

    assert.deepEqual(up.requests.map((r) => JSON.parse(r.body.toString()).id), [1, 2, 5]);
    const lines = await waitUntil(() => { const l = jsonLines(logFile); return mcpLines(l).length >= 5 && l; });
    for (const id of [3, 4]) {
        expectFields(byRpcId(lines, id), { status: 429, error: 'rate_limited', rate_limit: 'openai_subject' });
    }
    const { samples } = await scrape(admin);
    assert.equal(sampleValue(samples, 'mcpeek_rate_limited_total', { scope: 'openai_subject' }), 2);
    assert.equal(sampleValue(samples, 'mcpeek_config_reloads_total', { result: 'success' }), 2);
});
