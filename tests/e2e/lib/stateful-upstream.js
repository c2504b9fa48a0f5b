// A scripted MCP-like server that keeps sessions, for routing tests: `initialize` without
// Mcp-Session-Id creates a session named after the server ("A-3") and answers it in the
// Mcp-Session-Id header; any later request must carry a session this server issued, else it is
// answered 404 as an MCP server would. Answers say which server served them (result.served_by),
// GET opens an SSE stream that sends one event naming the server and ends, DELETE ends the
// session. Every request is recorded with the session it named. kill() stops the server and
// drops its connections (a crashed upstream: connections are refused from then on).

import http from 'node:http';

export async function startStatefulUpstream(t, name) {
    const sessions = new Set();
    const requests = [];
    const sockets = new Set();
    let issued = 0;
    let killed = false;
    const server = http.createServer((req, res) => {
        const chunks = [];
        req.on('data', (c) => chunks.push(c));
        req.on('end', () => {
            const body = Buffer.concat(chunks).toString('utf8');
            let rpc = null;
            try { rpc = body ? JSON.parse(body) : null; } catch { /* not JSON */ }
            const sid = req.headers['mcp-session-id'];
            requests.push({ method: req.method, session: sid, rpcMethod: rpc?.method, headers: req.headers });
            const json = (status, obj, headers = {}) => {
                const out = JSON.stringify(obj);
                res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(out), ...headers });
                res.end(out);
            };
            if (!sid) {
                if (req.method === 'POST' && rpc?.method === 'initialize') {
                    issued += 1;
                    const id = `${name}-${issued}`;
                    sessions.add(id);
                    json(200, { jsonrpc: '2.0', id: rpc.id, result: { protocolVersion: '2025-06-18', served_by: name } },
                        { 'Mcp-Session-Id': id });
                    return;
                }
                json(400, { jsonrpc: '2.0', id: rpc?.id ?? null, error: { code: -32000, message: 'Bad Request: no session' } });
                return;
            }
            if (!sessions.has(sid)) {
                json(404, { jsonrpc: '2.0', id: rpc?.id ?? null, error: { code: -32001, message: `Session not found on ${name}` } });
                return;
            }
            if (req.method === 'GET') {
                res.writeHead(200, { 'Content-Type': 'text/event-stream' });
                res.end(`event: message\ndata: {"jsonrpc":"2.0","method":"notifications/message","params":{"served_by":"${name}"}}\n\n`);
                return;
            }
            if (req.method === 'DELETE') {
                sessions.delete(sid);
                res.writeHead(200, { 'Content-Length': '0' });
                res.end();
                return;
            }
            json(200, { jsonrpc: '2.0', id: rpc?.id ?? null, result: { served_by: name, content: [] } });
        });
    });
    server.keepAliveTimeout = 30000;
    server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = server.address().port;
    const kill = () => new Promise((resolve) => {
        if (killed) { resolve(); return; }
        killed = true;
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
    });
    t.after(kill);
    return {
        name, port, origin: `http://127.0.0.1:${port}`, url: `http://127.0.0.1:${port}/mcp`,
        sessions, requests, kill,
    };
}
