-- bench/tools_call.lua: wrk script that POSTs a realistic ChatGPT `tools/call` to /mcp.
-- The body carries the full `params._meta` (all six openai/* keys) from the seed article, so a
-- proxy that parses JSON-RPC does its real work. Like ChatGPT, every call has a fresh
-- Mcp-Session-Id (rotating through 1024 precomputed requests per thread: no per-request Lua
-- cost) while openai/session stays stable. done() prints one machine-readable BENCH line.

local threads = {}
local counter = 0

function setup(thread)
    counter = counter + 1
    thread:set("tid", counter)
    table.insert(threads, thread)
end

local reqs = {}
local n = 0
local i = 0

local function body(rpc_id)
    return '{"jsonrpc":"2.0","id":' .. rpc_id .. ',"method":"tools/call","params":{'
        .. '"name":"create_matching_question",'
        .. '"arguments":{"topic":"Vietnamese coastal cities","difficulty":"medium",'
        .. '"pairs":[{"left":"Vung Tau","right":"Ba Ria-Vung Tau"},'
        .. '{"left":"Nha Trang","right":"Khanh Hoa"},{"left":"Da Nang","right":"Da Nang"}],'
        .. '"shuffle":true},'
        .. '"_meta":{'
        .. '"openai/session":"v1/abc123def456ghi789jkl012mno345pq",'
        .. '"openai/subject":"v1/user_xyz98765432109876543210",'
        .. '"openai/organization":"v1/org_4f3e2d1c0b9a8f7e6d5c",'
        .. '"openai/locale":"en-US",'
        .. '"openai/userAgent":"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) '
        .. 'AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",'
        .. '"openai/userLocation":{"city":"Vũng Tàu","country":"VN",'
        .. '"latitude":"10.34599","longitude":"107.08426","timezone":"Asia/Ho_Chi_Minh"}'
        .. '}}}'
end

function init(args)
    local t = tid or 1
    for k = 1, 1024 do
        local rpc_id = t * 100000 + k
        local sid = string.format("%08x-%04x-4%03x-8%03x-%012x", t, k % 65536, k % 4096,
            (t * 7) % 4096, k * 2654435761 % 281474976710656)
        reqs[k] = wrk.format("POST", "/mcp", {
            ["Content-Type"] = "application/json",
            ["Accept"] = "application/json, text/event-stream",
            ["Mcp-Session-Id"] = sid,
            ["MCP-Protocol-Version"] = "2025-06-18",
            ["User-Agent"] = "openai-mcp/1.0.0",
        }, body(rpc_id))
    end
    n = #reqs
end

function request()
    i = i + 1
    if i > n then i = 1 end
    return reqs[i]
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        "BENCH requests=%d duration_us=%d rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d " ..
        "mean_us=%.1f err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d " ..
        "bytes=%d\n",
        summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
        latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
        latency.mean, e.connect, e.read, e.write, e.status, e.timeout, summary.bytes))
end
