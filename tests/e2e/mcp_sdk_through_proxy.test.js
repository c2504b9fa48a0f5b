// The official MCP SDK client talks to server-everything through mcpeek: initialize, tools,
// progress over SSE, the GET stream and session DELETE all work, and each exchange is one log
// line with the right MCP fields. Raw POSTs carrying ChatGPT's params._meta (the article's exact
// example) prove the openai_* fields, and the session map naming GET/DELETE lines.

import assert from 'node:assert/strict';
import http from 'node:http';
import test from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { LoggingMessageNotificationSchema } from '@modelcontextprotocol/sdk/types.js';
import {
    expectFields, fmtLines, parseSse, POST_HEADERS, request, sleep, startEverything, startMcpeek,
} from './lib/harness.js';

// params._meta exactly as in the seed article ("On the wire it looks like this").
const ARTICLE_META = {
    'openai/session': 'v1/abc123...',
    'openai/subject': 'v1/user_xyz...',
    'openai/organization': 'v1/org_...',
    'openai/locale': 'en-US',
    'openai/userAgent': 'Mozilla/5.0 ...',
    'openai/userLocation': {
        city: 'Vũng Tàu', country: 'VN',
        latitude: '10.34599', longitude: '107.08426',
        timezone: 'Asia/Ho_Chi_Minh',
    },
};

async function waitFor(what, fn, timeoutMs = 5000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        const v = fn();
        if (v) return v;
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
        await sleep(25);
    }
}

function only(lines, what, pred) {
    const found = lines.filter(pred);
    assert.equal(found.length, 1,
        `expected exactly one log line for ${what}, got ${found.length}; all lines:\n${fmtLines(lines)}`);
    return found[0];
}

test('sdk_client_session_works_through_proxy_and_logs_one_line_per_exchange', async (t) => {
    const upstream = await startEverything(t);
    const proxy = await startMcpeek(t, upstream.url);

    const client = new Client({ name: 'mcpeek-e2e', version: '1.0.0' });
    const transport = new StreamableHTTPClientTransport(new URL(proxy.url));
    const logMessages = [];
    client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => logMessages.push(n));
    t.after(() => client.close().catch(() => {}));

    await client.connect(transport);
    const sessionId = transport.sessionId;
    assert.ok(sessionId, 'the server gave the SDK a session id through the proxy');

    const tools = await client.listTools();
    const names = tools.tools.map((x) => x.name);
    assert.ok(names.includes('echo') && names.includes('trigger-long-running-operation'),
        `tools/list through the proxy: ${names.join(', ')}`);

    const echo = await client.callTool({ name: 'echo', arguments: { message: 'hello through mcpeek' } });
    assert.equal(echo.content[0].text, 'Echo: hello through mcpeek');

    const progress = [];
    const long = await client.callTool(
        { name: 'trigger-long-running-operation', arguments: { duration: 1.5, steps: 3 } },
        undefined,
        { onprogress: (p) => progress.push({ ...p, at: Date.now() }) },
    );
    assert.match(long.content[0].text, /Long running operation completed/);
    assert.ok(progress.length >= 2, `expected >= 2 progress notifications, got ${JSON.stringify(progress)}`);
    // Streamed, not buffered: progress notifications arrive spread over the call (~0.5 s apart).
    const spread = progress[progress.length - 1].at - progress[0].at;
    assert.ok(spread >= 500, `progress notifications arrived ${spread} ms apart in total: buffered?`);

    // The server-to-client GET stream the SDK opened after initialize carries unsolicited
    // notifications: toggle-simulated-logging sends one right away on that stream.
    await waitFor('the SDK GET stream to reach server-everything',
        () => /Establishing new SSE stream/.test(upstream.proc.output()));
    await client.callTool({ name: 'toggle-simulated-logging', arguments: {} });
    await waitFor('a logging notification over the GET stream', () => logMessages.length >= 1);
    await client.callTool({ name: 'toggle-simulated-logging', arguments: {} });

    await transport.terminateSession();
    await client.close();
    if (proxy.direct) return;

    // initialize, notifications/initialized, GET, tools/list, 4 tools/call, DELETE
    const lines = await proxy.expectLogCount(9, 8000);
    for (const l of lines) {
        assert.equal(l.path, '/mcp', `path in ${JSON.stringify(l)}`);
        assert.equal(l.client_ip, '127.0.0.1', `client_ip in ${JSON.stringify(l)}`);
        assert.equal(typeof l.duration_ms, 'number', `duration_ms in ${JSON.stringify(l)}`);
        assert.equal(typeof l.ts, 'string');
        if (l.rpc_method !== 'initialize') {
            assert.equal(l.mcp_session_id, sessionId, `mcp_session_id in ${JSON.stringify(l)}`);
        }
    }
    const init = only(lines, 'initialize', (l) => l.rpc_method === 'initialize');
    expectFields(init, { http_method: 'POST', status: 200, rpc_id: 0, response: 'sse' }, 'initialize');
    assert.ok(init.bytes_in > 0 && init.bytes_out > 0, `bytes in/out in ${JSON.stringify(init)}`);

    const inited = only(lines, 'notifications/initialized', (l) => l.rpc_method === 'notifications/initialized');
    expectFields(inited, { status: 202, notification: true, response: 'empty', rpc_id: undefined },
        'notifications/initialized');

    const list = only(lines, 'tools/list', (l) => l.rpc_method === 'tools/list');
    expectFields(list, { status: 200, response: 'sse', rpc_id: 1 }, 'tools/list');
    assert.ok(list.mcp_protocol_version, `mcp_protocol_version in ${JSON.stringify(list)}`);

    const echoLine = only(lines, 'tools/call echo', (l) => l.tool === 'echo');
    expectFields(echoLine, { rpc_method: 'tools/call', status: 200, response: 'sse' }, 'tools/call echo');

    const longLine = only(lines, 'tools/call trigger-long-running-operation',
        (l) => l.tool === 'trigger-long-running-operation');
    expectFields(longLine, { rpc_method: 'tools/call', status: 200, response: 'sse' }, 'long-running tools/call');
    assert.ok(longLine.sse_events >= 3, `sse_events >= 3 expected: ${JSON.stringify(longLine)}`);
    assert.ok(longLine.duration_ms >= 1400, `duration_ms of a 1.5 s call: ${JSON.stringify(longLine)}`);

    assert.equal(lines.filter((l) => l.tool === 'toggle-simulated-logging').length, 2);

    const get = only(lines, 'GET stream', (l) => l.http_method === 'GET');
    expectFields(get, { status: 200, response: 'sse' }, 'GET stream');
    assert.ok(get.sse_events >= 1, `the GET stream carried the logging notification: ${JSON.stringify(get)}`);

    const del = only(lines, 'DELETE', (l) => l.http_method === 'DELETE');
    expectFields(del, { status: 200 }, 'DELETE');
    for (const l of lines) {
        assert.equal(l.openai_session, undefined, `no _meta was sent: ${JSON.stringify(l)}`);
    }
});

// Raw JSON-RPC over HTTP, the way ChatGPT's connector sends it.
async function rpc(url, sessionId, msg, extraHeaders = []) {
    const headers = [...POST_HEADERS, ['MCP-Protocol-Version', '2025-06-18'], ...extraHeaders];
    if (sessionId) headers.push(['Mcp-Session-Id', sessionId]);
    const res = await request(url, { method: 'POST', headers, body: JSON.stringify(msg) });
    let messages = [];
    if ((res.headers['content-type'] || '').startsWith('text/event-stream')) {
        messages = parseSse(res.text()).filter((e) => e.data).map((e) => JSON.parse(e.data));
    } else if (res.body.length) {
        messages = [res.json()];
    }
    return { ...res, messages };
}

test('openai_meta_is_logged_and_session_map_names_get_and_delete', async (t) => {
    const upstream = await startEverything(t);
    const proxy = await startMcpeek(t, upstream.url);

    const init = await rpc(proxy.url, null, {
        jsonrpc: '2.0', id: 1, method: 'initialize',
        params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'openai-mcp', version: '1.0.0' } },
    });
    assert.equal(init.status, 200, `initialize: ${init.text()}`);
    const sid = init.headers['mcp-session-id'];
    assert.ok(sid, 'initialize answered with an Mcp-Session-Id through the proxy');
    const inited = await rpc(proxy.url, sid, { jsonrpc: '2.0', method: 'notifications/initialized' });
    assert.equal(inited.status, 202);

    // An older client sending openai/session as a number: logged as a string.
    const numeric = await rpc(proxy.url, sid, {
        jsonrpc: '2.0', id: 2, method: 'tools/call',
        params: { name: 'echo', arguments: { message: 'n' }, _meta: { 'openai/session': 12345 } },
    });
    assert.equal(numeric.status, 200);

    // The article's example, verbatim.
    const call = await rpc(proxy.url, sid, {
        jsonrpc: '2.0', id: 47, method: 'tools/call',
        params: { name: 'echo', arguments: { message: 'from chatgpt' }, _meta: ARTICLE_META },
    });
    assert.equal(call.status, 200);
    assert.equal(call.messages.at(-1).result.content[0].text, 'Echo: from chatgpt');

    // GET stream, opened by hand: read its first event, then hang up.
    const get = await new Promise((resolve, reject) => {
        const req = http.request(`${proxy.url}`, {
            method: 'GET', agent: false,
            headers: { Accept: 'text/event-stream', 'Mcp-Session-Id': sid, 'MCP-Protocol-Version': '2025-06-18' },
        }, (res) => resolve({ req, res }));
        req.on('error', reject);
        req.end();
    });
    assert.equal(get.res.statusCode, 200, 'GET stream status');
    assert.match(get.res.headers['content-type'], /^text\/event-stream/);
    let getText = '';
    get.res.on('data', (d) => { getText += d; });
    get.res.on('error', () => {});
    await waitFor('server-everything to register the GET stream',
        () => /Establishing new SSE stream/.test(upstream.proc.output()));
    // Something to read on the GET stream: a logging notification sent right away.
    const toggle = await rpc(proxy.url, sid, {
        jsonrpc: '2.0', id: 48, method: 'tools/call',
        params: { name: 'toggle-simulated-logging', arguments: {}, _meta: ARTICLE_META },
    });
    assert.equal(toggle.status, 200);
    await waitFor('the first event on the GET stream', () => /notifications\/message/.test(getText));
    get.req.destroy();

    const del = await request(proxy.url, {
        method: 'DELETE', headers: [['Mcp-Session-Id', sid], ['MCP-Protocol-Version', '2025-06-18']],
    });
    assert.equal(del.status, 200, `DELETE: ${del.text()}`);
    if (proxy.direct) return;

    // initialize, initialized, 2 tools/call, GET, toggle, DELETE
    const lines = await proxy.expectLogCount(7, 8000);
    const num = only(lines, 'numeric openai/session', (l) => l.rpc_id === 2);
    expectFields(num, { openai_session: '12345' }, 'numeric openai/session logged as a string');

    const l = only(lines, 'the article request', (x) => x.rpc_id === 47);
    expectFields(l, {
        rpc_method: 'tools/call', tool: 'echo', status: 200, mcp_session_id: sid,
        openai_session: 'v1/abc123...', openai_subject: 'v1/user_xyz...', openai_org: 'v1/org_...',
        openai_locale: 'en-US', openai_user_agent: 'Mozilla/5.0 ...',
        // coarse by default: no latitude/longitude
        openai_user_location: { city: 'Vũng Tàu', country: 'VN', timezone: 'Asia/Ho_Chi_Minh' },
        openai_from: undefined,
    }, 'tools/call with the article _meta');

    const g = only(lines, 'GET stream', (x) => x.http_method === 'GET');
    expectFields(g, {
        status: 200, response: 'sse', mcp_session_id: sid,
        openai_session: 'v1/abc123...', openai_from: 'session_map',
    }, 'GET stream after a _meta request');
    assert.ok(g.sse_events >= 1, `GET stream events: ${JSON.stringify(g)}`);

    const d = only(lines, 'DELETE', (x) => x.http_method === 'DELETE');
    expectFields(d, {
        status: 200, mcp_session_id: sid, openai_session: 'v1/abc123...', openai_from: 'session_map',
    }, 'DELETE after a _meta request');
});
