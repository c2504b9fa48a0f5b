/* fuzz_client: libFuzzer harness for the whole front end (client.c, with http1.c, access.c
 * and proxy.c behind it), driven through a socketpair as a real client would.
 *
 * The input is written to the connection in pieces whose sizes come from the input itself
 * (so pipelining, chunked bodies and heads split anywhere are all reached), the worker's
 * event loop runs between pieces, then the client side shuts its write half and the loop
 * runs until the connection is gone. The upstream is an address where nothing listens, so
 * every request that gets that far is answered 502. Checked after each input: nothing
 * crashed or leaked (ASan/LSan), the connection and every exchange ended, there are no more
 * final responses than log lines, and neither outnumbers the request heads the input could
 * hold (at most one response per request, at most one line per exchange).
 */
#include <fcntl.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "mcpeek/client.h"
#include "mcpeek/config.h"
#include "mcpeek/generation.h"
#include "mcpeek/proxy.h"
#include "mcpeek/session_map.h"
#include "mcpeek/upstream.h"
#include "mcpeek/worker.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Small limits so that inputs of a few KiB reach every refusal. Nothing listens on port 1. */
static const char FUZZ_CONFIG[] = "listen 127.0.0.1:1\n"
                                  "upstream http://127.0.0.1:1/mcp\n"
                                  "max_header_size 1k\n"
                                  "max_body_size 2k\n"
                                  "max_connections 0\n"
                                  "log_file /dev/null\n";

/* Loop rounds after the client's EOF before the connection must be gone. Each round runs
 * whatever is ready without waiting, so this bounds events, not time. */
#define FUZZ_CLOSE_ROUNDS 20000
/* Response bytes kept per input (mcpeek's own answers here are a few hundred bytes each). */
#define FUZZ_OUT_MAX (1u << 20)

static struct worker fuzz_worker;
static struct shared fuzz_shared;
static char *fuzz_out;
static size_t fuzz_out_len;

static void fuzz_init(void)
{
    struct strbuf errors;
    strbuf_init(&errors);
    struct mcpeek_config *cfg =
        config_parse_buffer("fuzz", FUZZ_CONFIG, sizeof(FUZZ_CONFIG) - 1, &errors);
    struct generation *gen = cfg ? generation_new(cfg, 1, &errors) : NULL;
    if (!gen)
        abort();
    strbuf_free(&errors);
    fuzz_shared.log = accesslog_open("/dev/null");
    fuzz_shared.metrics = metrics_new(1, 100, "fuzz");
    fuzz_shared.sessions = session_map_new(64, 60000);
    atomic_init(&fuzz_shared.connections, 0);
    struct worker *w = &fuzz_worker;
    w->shared = &fuzz_shared;
    w->gen = gen;
    w->metrics = metrics_worker(fuzz_shared.metrics, 0);
    strbuf_init(&w->logbuf);
    strbuf_init(&w->scratch);
    w->base = event_base_new();
    if (!fuzz_shared.log || !fuzz_shared.metrics || !fuzz_shared.sessions || !w->base ||
        event_base_priority_init(w->base, 3) < 0 || !(w->upstream = upstream_new(w->base)))
        abort();
    /* log_flush stays NULL: worker_log writes each line at once, so counting is exact. */
    fuzz_out = malloc(FUZZ_OUT_MAX);
    if (!fuzz_out)
        abort();
}

/* One loop round, then whatever the connection wrote is read. */
static void fuzz_round(int peer)
{
    event_base_loop(fuzz_worker.base, EVLOOP_NONBLOCK);
    for (;;) {
        char buf[16384];
        ssize_t n = read(peer, buf, sizeof(buf));
        if (n <= 0)
            return;
        size_t keep = (size_t)n;
        if (keep > FUZZ_OUT_MAX - fuzz_out_len)
            __builtin_trap(); /* far more output than the input can ask for */
        memcpy(fuzz_out + fuzz_out_len, buf, keep);
        fuzz_out_len += keep;
    }
}

/* Final (non-1xx) responses: a status line at the start of the output or of a line. mcpeek's
 * bodies here are JSON, which cannot hold a raw line break, so none starts inside a body. */
static size_t fuzz_count_responses(void)
{
    size_t n = 0;
    for (size_t i = 0; i + 12 <= fuzz_out_len; i++) {
        if ((i == 0 || fuzz_out[i - 1] == '\n') && memcmp(fuzz_out + i, "HTTP/1.1 ", 9) == 0 &&
            fuzz_out[i + 9] != '1')
            n++;
    }
    return n;
}

/* How many request heads the input could hold at most: blank lines, plus one for a head
 * refused before its end (too large, malformed request line). */
static size_t fuzz_max_heads(const uint8_t *data, size_t size)
{
    size_t n = 1;
    for (size_t i = 0; i + 1 < size; i++)
        if (data[i] == '\n' &&
            (data[i + 1] == '\n' || (data[i + 1] == '\r' && i + 2 < size && data[i + 2] == '\n')))
            n++;
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool ready;
    if (!ready) {
        fuzz_init();
        ready = true;
    }
    struct worker *w = &fuzz_worker;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
        return 0;
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    struct sockaddr_in peer = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    uint64_t lines_before = accesslog_lines(fuzz_shared.log);
    fuzz_out_len = 0;
    client_accept(w, sv[0], false, (const struct sockaddr *)&peer);

    /* Inputs whose length is a multiple of 4 are written at once; the others in pieces of
     * 1..64 bytes whose sizes come from the data. */
    size_t off = 0;
    for (size_t k = 0; off < size; k++) {
        size_t piece = size % 4 == 0 ? size : 1 + (data[(k * 13 + 1) % size] & 63u);
        if (piece > size - off)
            piece = size - off;
        ssize_t n = write(sv[1], data + off, piece);
        if (n > 0)
            off += (size_t)n;
        for (int r = 0; r < 3; r++)
            fuzz_round(sv[1]);
        if (n <= 0 && !w->clients)
            break; /* closed (after a refusal): the rest is not read */
    }
    shutdown(sv[1], SHUT_WR);
    for (int r = 0; r < FUZZ_CLOSE_ROUNDS && (w->clients || w->exchanges); r++)
        fuzz_round(sv[1]);
    if (w->clients || w->exchanges)
        __builtin_trap(); /* a connection or exchange that outlives its client's EOF */
    close(sv[1]);

    size_t lines = (size_t)(accesslog_lines(fuzz_shared.log) - lines_before);
    size_t responses = fuzz_count_responses();
    size_t heads = fuzz_max_heads(data, size);
    if (getenv("FUZZ_CLIENT_VERBOSE")) /* to see what a seed reaches */
        fprintf(stderr, "fuzz_client: %zu bytes, %zu responses, %zu lines, <= %zu heads\n%.*s\n",
                size, responses, lines, heads, (int)fuzz_out_len, fuzz_out);
    if (responses > lines || lines > heads || responses > heads)
        __builtin_trap();
    return 0;
}
