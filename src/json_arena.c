/* json_arena: a per-thread bump allocator for the jansson tree of one request body.
 *
 * Chunks are malloc'd and chained; the first one (JSON_ARENA_CHUNK) stays for the next parse,
 * larger ones made for a big body are freed by json_arena_end. The free function jansson
 * calls ignores pointers inside this thread's chunks (the whole arena is rewound instead) and
 * hands every other pointer to free(): trees made outside an open arena are plain malloc.
 */
#include "mcpeek/json_arena.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

/* The chunk every thread keeps: a typical MCP request's tree fits in it many times over. */
#define JSON_ARENA_CHUNK (32 * 1024)
#define JSON_ARENA_ALIGN 16

struct arena_chunk {
    struct arena_chunk *next;
    size_t size; /* bytes of data[] */
    size_t used;
    _Alignas(JSON_ARENA_ALIGN) unsigned char data[];
};

struct arena {
    bool open;
    struct arena_chunk *chunks; /* newest first; the last one is the kept one */
};

static _Thread_local struct arena arena;
static bool installed;

static bool arena_owns(const struct arena *a, const void *p)
{
    const unsigned char *u = p;
    for (const struct arena_chunk *c = a->chunks; c; c = c->next)
        if (u >= c->data && u < c->data + c->size)
            return true;
    return false;
}

static void *arena_malloc(size_t size)
{
    struct arena *a = &arena;
    if (!a->open)
        return malloc(size);
    size = (size + JSON_ARENA_ALIGN - 1) & ~(size_t)(JSON_ARENA_ALIGN - 1);
    struct arena_chunk *c = a->chunks;
    if (!c || c->size - c->used < size) {
        size_t want = c ? c->size * 2 : JSON_ARENA_CHUNK;
        while (want < size)
            want *= 2;
        struct arena_chunk *fresh = malloc(offsetof(struct arena_chunk, data) + want);
        if (!fresh)
            return NULL;
        fresh->size = want;
        fresh->used = 0;
        fresh->next = c;
        a->chunks = c = fresh;
    }
    void *p = c->data + c->used;
    c->used += size;
    return p;
}

static void arena_free(void *p)
{
    if (p && !arena_owns(&arena, p))
        free(p);
}

void json_arena_install(void)
{
    json_set_alloc_funcs(arena_malloc, arena_free);
    installed = true;
}

bool json_arena_begin(void)
{
    arena.open = installed;
    return installed;
}

void json_arena_release(json_t *root, bool in_arena)
{
    if (!in_arena)
        json_decref(root);
}

void json_arena_end(void)
{
    struct arena *a = &arena;
    a->open = false;
    while (a->chunks && a->chunks->next) {
        struct arena_chunk *c = a->chunks;
        a->chunks = c->next;
        free(c);
    }
    if (a->chunks)
        a->chunks->used = 0;
}

void json_arena_thread_free(void)
{
    json_arena_end();
    free(arena.chunks);
    arena.chunks = NULL;
}
