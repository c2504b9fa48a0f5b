/* json_arena: jansson's allocations during one request-body parse come from a per-thread arena.
 *
 * jansson allocates every node, key and string of a tree separately and frees each one again;
 * for a tree that lives only while jsonrpc_parse reads it, bumping a pointer in a buffer kept
 * per thread and rewinding it afterwards is cheaper (bench/parse_bench.c has the figures).
 * json_set_alloc_funcs is process-wide, so the functions it installs fall back to malloc/free
 * on any thread, or at any time, that has no arena open.
 */
#ifndef MCPEEK_JSON_ARENA_H
#define MCPEEK_JSON_ARENA_H

#include <stdbool.h>

#include <jansson.h>

/* Points jansson's allocator at the arena functions. Once, before any other thread uses
 * jansson (main, before the workers start). Without it the arena is never used. */
void json_arena_install(void);

/* Opens the calling thread's arena: until json_arena_end, jansson allocates from it. Returns
 * false when the arena is not installed (jansson then uses malloc: free the tree as usual). */
bool json_arena_begin(void);

/* Frees a tree made while the arena was open: nothing to do when it came from the arena
 * (json_arena_end reclaims it whole), json_decref otherwise. */
void json_arena_release(json_t *root, bool in_arena);

/* Closes the arena and rewinds it; nothing it held may be used afterwards. Memory beyond
 * the first chunk (a large body's tree) is returned to the system. */
void json_arena_end(void);

/* Frees the calling thread's arena (thread exit). */
void json_arena_thread_free(void);

#endif
