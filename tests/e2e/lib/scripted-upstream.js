// A small in-process HTTP upstream scripted per test, for answers a real MCP server will not
// produce on demand (slow SSE, resets, huge bodies, odd headers). It records every request
// (method, path, headers, raw headers, exact body bytes) and every TCP connection it accepts.
// The handler runs once the request body is fully read: handler(req, res, bodyBuffer).

import http from 'node:http';

// Listens on a free loopback port and, at teardown, destroys the sockets in `sockets` (the
// caller tracks them) and closes the server. Returns the port.
export async function listenUntilTeardown(t, server, sockets) {
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    t.after(() => new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
    }));
    return server.address().port;
}

export async function startScriptedUpstream(t, handler) {
    const state = {
        requests: [],
        connections: 0,
        sockets: new Set(),
        handler,
    };
    const server = http.createServer((req, res) => {
        const chunks = [];
        req.on('data', (c) => chunks.push(c));
        req.on('end', () => {
            const body = Buffer.concat(chunks);
            const rec = {
                method: req.method, url: req.url, headers: req.headers, rawHeaders: req.rawHeaders,
                body, socketId: req.socket.mcpeekId,
            };
            state.requests.push(rec);
            try {
                state.handler(req, res, body, rec);
            } catch (e) {
                res.statusCode = 500;
                res.end(`handler threw: ${e.message}`);
            }
        });
    });
    server.keepAliveTimeout = 30000;
    server.on('connection', (sock) => {
        state.connections += 1;
        sock.mcpeekId = state.connections;
        state.sockets.add(sock);
        sock.on('close', () => state.sockets.delete(sock));
    });
    const port = await listenUntilTeardown(t, server, state.sockets);
    return {
        port,
        origin: `http://127.0.0.1:${port}`,
        url: `http://127.0.0.1:${port}/mcp`,
        server,
        get requests() { return state.requests; },
        get connections() { return state.connections; },
        setHandler(h) { state.handler = h; },
    };
}

// Answers a JSON-RPC request with a JSON result echoing the id.
export function jsonResult(res, body, result = {}, headers = {}) {
    let id = null;
    try { id = JSON.parse(body.toString('utf8')).id ?? null; } catch { /* keep null */ }
    const out = JSON.stringify({ jsonrpc: '2.0', id, result });
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(out), ...headers });
    res.end(out);
}
