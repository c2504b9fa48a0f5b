// clang-format off
/* parse_bench: ns per jsonrpc_parse of a typical tools/call body, jansson with malloc vs the arena.
 *
 * Build and run by hand from the repository root (not part of CMake), one line:
 *   cc -O2 -std=c11 -D_GNU_SOURCE -Iinclude bench/parse_bench.c src/jsonrpc.c src/openai_meta.c src/json_arena.c src/strbuf.c $(pkg-config --cflags --libs jansson) -o /tmp/parse_bench && /tmp/parse_bench
 *
 * Both runs are the daemon's code path (json_loadb into a tree, fields copied out,
 * mcp_request_clear); they differ only in jansson's allocator: malloc/free per node, or the
 * per-thread arena json_arena.c installs (the daemon's setting). The two alternate in rounds
 * in one process so a busy machine hurts both alike. Optional argument: iterations per round.
 */
// clang-format on
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mcpeek/json_arena.h"
#include "mcpeek/jsonrpc.h"

#define BENCH_MAX_STRING 256
#define BENCH_ITERATIONS 200000L
#define BENCH_ROUNDS 5

static const char bench_body[] =
    "{\"jsonrpc\":\"2.0\",\"id\":47,\"method\":\"tools/call\",\"params\":{\"name\":"
    "\"search_flights\",\"arguments\":{\"from\":\"SGN\",\"to\":\"HAN\",\"date\":\"2026-12-01\","
    "\"passengers\":2},\"_meta\":{\"openai/session\":\"v1/abc123\",\"openai/subject\":"
    "\"v1/user_xyz\",\"openai/organization\":\"v1/org_1\",\"openai/locale\":\"en-US\","
    "\"openai/userAgent\":\"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) "
    "AppleWebKit/537.36\",\"openai/userLocation\":{\"city\":\"V\xc5\xa9ng T\xc3\xa0u\","
    "\"country\":\"VN\",\"region\":\"B\xc3\xa0 R\xe1\xbb\x8b"
    "a\xe2\x80\x93V\xc5\xa9ng "
    "T\xc3\xa0u\",\"latitude\":10.346,\"longitude\":107.084,\"timezone\":\"Asia/Ho_Chi_Minh\"},"
    "\"progressToken\":\"p-1\"}}}";

static void *plain_malloc(size_t n)
{
    return malloc(n);
}

static void plain_free(void *p)
{
    free(p);
}

static double bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static double bench_run(long iterations)
{
    struct mcp_request req;
    double start = bench_now_ns();
    for (long i = 0; i < iterations; i++) {
        if (jsonrpc_parse(bench_body, sizeof(bench_body) - 1, BENCH_MAX_STRING, &req) !=
                JSONRPC_OK ||
            !req.openai) {
            fprintf(stderr, "parse_bench: the body did not parse: %s\n", req.error);
            exit(1);
        }
        mcp_request_clear(&req);
    }
    return (bench_now_ns() - start) / (double)iterations;
}

int main(int argc, char **argv)
{
    long iterations = argc > 1 ? atol(argv[1]) : BENCH_ITERATIONS;
    double best_plain = 1e18, best_arena = 1e18;
    if (iterations <= 0)
        iterations = BENCH_ITERATIONS;
    for (int round = 0; round < BENCH_ROUNDS; round++) {
        json_set_alloc_funcs(plain_malloc, plain_free);
        double plain = bench_run(iterations);
        json_arena_install();
        double arena = bench_run(iterations);
        best_plain = plain < best_plain ? plain : best_plain;
        best_arena = arena < best_arena ? arena : best_arena;
    }
    printf("body: %zu bytes, %ld parses per round, best of %d rounds\n", sizeof(bench_body) - 1,
           iterations, BENCH_ROUNDS);
    printf("jansson, malloc per node:  %8.1f ns/parse\n", best_plain);
    printf("jansson, per-thread arena: %8.1f ns/parse  (%.0f%% less)\n", best_arena,
           100.0 * (best_plain - best_arena) / best_plain);
    json_arena_thread_free();
    return 0;
}
