/* openai_meta: ChatGPT's `openai/...` hints in params._meta -> OpenAiClientContext.
 *
 * Type tolerant on purpose: strings are copied, JSON numbers become decimal strings, any other
 * type is skipped. Values are gathered on the stack and the context is allocated only once a
 * usable key was found, so a client that is not ChatGPT costs a few hash lookups and no malloc.
 * Every copy is cut on a UTF-8 boundary and at an embedded NUL, so it is a valid C string.
 */
#include "mcpeek/openai_meta.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Fits "%lld" of any long long and "%.17g" of any double ("-2.2250738585072014e-308"). */
#define OPENAI_META_NUMBUF 32

/* One `_meta` key and the struct member it fills. */
struct openai_meta_key {
    const char *name;
    size_t offset;
};

static const struct openai_meta_key openai_meta_context_keys[] = {
    {"openai/session", offsetof(OpenAiClientContext, session_id)},
    {"openai/subject", offsetof(OpenAiClientContext, subject_id)},
    {"openai/organization", offsetof(OpenAiClientContext, organization_id)},
    {"openai/locale", offsetof(OpenAiClientContext, locale)},
    {"openai/userAgent", offsetof(OpenAiClientContext, user_agent)},
};

static const struct openai_meta_key openai_meta_location_keys[] = {
    {"city", offsetof(struct openai_user_location, city)},
    {"region", offsetof(struct openai_user_location, region)},
    {"country", offsetof(struct openai_user_location, country)},
    {"timezone", offsetof(struct openai_user_location, timezone)},
    {"latitude", offsetof(struct openai_user_location, latitude)},
    {"longitude", offsetof(struct openai_user_location, longitude)},
};

#define OPENAI_META_NKEYS(table) (sizeof(table) / sizeof((table)[0]))

static char **openai_meta_slot(void *base, const struct openai_meta_key *key)
{
    return (char **)(void *)((char *)base + key->offset);
}

static const char *openai_meta_get(const void *base, const struct openai_meta_key *key)
{
    return *(const char *const *)(const void *)((const char *)base + key->offset);
}

/* Bytes of the well-formed UTF-8 sequence starting at u[0] (avail > 0 bytes readable), or 0
 * when it is malformed or truncated: overlong forms, surrogates and code points above
 * U+10FFFF are rejected, as RFC 3629 (and jansson) do. */
static size_t openai_meta_utf8_seq(const unsigned char *u, size_t avail)
{
    unsigned char lo = 0x80, hi = 0xbf;
    size_t n, k;

    if (u[0] < 0x80)
        return 1;
    if (u[0] >= 0xc2 && u[0] <= 0xdf) {
        n = 2;
    } else if (u[0] >= 0xe0 && u[0] <= 0xef) {
        n = 3;
        if (u[0] == 0xe0)
            lo = 0xa0; /* overlong */
        else if (u[0] == 0xed)
            hi = 0x9f; /* surrogates */
    } else if (u[0] >= 0xf0 && u[0] <= 0xf4) {
        n = 4;
        if (u[0] == 0xf0)
            lo = 0x90; /* overlong */
        else if (u[0] == 0xf4)
            hi = 0x8f; /* above U+10FFFF */
    } else {
        return 0;
    }
    if (n > avail || u[1] < lo || u[1] > hi)
        return 0;
    for (k = 2; k < n; k++)
        if ((u[k] & 0xc0) != 0x80)
            return 0;
    return n;
}

size_t openai_meta_utf8_cut(const char *s, size_t len, size_t max_len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, n;

    if (len > max_len)
        len = max_len;
    while (i < len) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        n = openai_meta_utf8_seq(u + i, len - i);
        if (n == 0)
            break;
        i += n;
    }
    return i;
}

char *openai_meta_copy(const char *s, size_t len, size_t max_len)
{
    /* An embedded NUL (JSON "\u0000") would end the C string early and hide what follows:
     * each one becomes U+FFFD instead, so the value stays whole and visibly marked. */
    size_t nuls = 0;
    for (const char *p = s; (p = memchr(p, '\0', (size_t)(s + len - p))) != NULL; p++)
        nuls++;
    const char *src = s;
    char *marked = NULL;
    if (nuls) {
        marked = malloc(len + nuls * 2);
        if (!marked)
            return NULL;
        size_t o = 0;
        for (size_t i = 0; i < len; i++) {
            if (s[i] == '\0') {
                memcpy(marked + o, "\xEF\xBF\xBD", 3);
                o += 3;
            } else {
                marked[o++] = s[i];
            }
        }
        src = marked;
        len = o;
    }
    len = openai_meta_utf8_cut(src, len, max_len);
    char *copy = malloc(len + 1);
    if (copy) {
        memcpy(copy, src, len);
        copy[len] = '\0';
    }
    free(marked);
    return copy;
}

/* Shortest "%.Ng" (N = 15..17) that reads back as the same double: 10.34599 -> "10.34599",
 * where a bare "%.17g" would print "10.345990000000001". */
static void openai_meta_format_real(double v, char *buf, size_t size)
{
    int prec;

    for (prec = 15; prec < 17; prec++) {
        snprintf(buf, size, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
    snprintf(buf, size, "%.17g", v);
}

/* Sets *out to a capped copy of a string or number value; leaves it NULL for any other type
 * (including a missing key). Returns -1 only when an allocation fails. */
static int openai_meta_value(const json_t *v, size_t max_len, char **out)
{
    char num[OPENAI_META_NUMBUF];
    const char *s;
    size_t len;

    *out = NULL;
    if (json_is_string(v)) {
        s = json_string_value(v);
        len = json_string_length(v);
    } else if (json_is_integer(v)) {
        snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(v));
        s = num;
        len = strlen(num);
    } else if (json_is_real(v)) {
        openai_meta_format_real(json_real_value(v), num, sizeof(num));
        s = num;
        len = strlen(num);
    } else {
        return 0;
    }
    *out = openai_meta_copy(s, len, max_len);
    return *out ? 0 : -1;
}

/* Fills the members of `base` named in `keys` from `obj`. *found tells whether any was
 * usable. On allocation failure returns -1; what was filled stays for the caller to free. */
static int openai_meta_fill(const json_t *obj, const struct openai_meta_key *keys, size_t n,
                            void *base, size_t max_len, bool *found)
{
    size_t i;
    char **slot;

    *found = false;
    for (i = 0; i < n; i++) {
        slot = openai_meta_slot(base, &keys[i]);
        if (openai_meta_value(json_object_get(obj, keys[i].name), max_len, slot) < 0)
            return -1;
        if (*slot)
            *found = true;
    }
    return 0;
}

static void openai_meta_free_members(void *base, const struct openai_meta_key *keys, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        free(*openai_meta_slot(base, &keys[i]));
}

static int openai_meta_dup_members(void *dst, const void *src, const struct openai_meta_key *keys,
                                   size_t n)
{
    size_t i;
    const char *s;

    for (i = 0; i < n; i++) {
        s = openai_meta_get(src, &keys[i]);
        if (s && !(*openai_meta_slot(dst, &keys[i]) = strdup(s)))
            return -1;
    }
    return 0;
}

OpenAiClientContext *openai_meta_extract(const json_t *meta, size_t max_len)
{
    OpenAiClientContext tmp = {0};
    struct openai_user_location loc = {0};
    OpenAiClientContext *ctx = NULL;
    const json_t *where;
    bool have_ctx = false, have_loc = false;

    if (!json_is_object(meta))
        return NULL;
    if (openai_meta_fill(meta, openai_meta_context_keys,
                         OPENAI_META_NKEYS(openai_meta_context_keys), &tmp, max_len, &have_ctx) < 0)
        goto fail;
    where = json_object_get(meta, "openai/userLocation");
    if (json_is_object(where) && openai_meta_fill(where, openai_meta_location_keys,
                                                  OPENAI_META_NKEYS(openai_meta_location_keys),
                                                  &loc, max_len, &have_loc) < 0)
        goto fail;
    if (!have_ctx && !have_loc)
        return NULL; /* nothing was copied, nothing to free */

    ctx = malloc(sizeof(*ctx));
    if (!ctx)
        goto fail;
    *ctx = tmp;
    ctx->user_location = NULL;
    if (have_loc) {
        ctx->user_location = malloc(sizeof(*ctx->user_location));
        if (!ctx->user_location)
            goto fail;
        *ctx->user_location = loc;
    }
    return ctx;

fail:
    free(ctx);
    openai_meta_free_members(&loc, openai_meta_location_keys,
                             OPENAI_META_NKEYS(openai_meta_location_keys));
    openai_meta_free_members(&tmp, openai_meta_context_keys,
                             OPENAI_META_NKEYS(openai_meta_context_keys));
    return NULL;
}

OpenAiClientContext *openai_meta_dup(const OpenAiClientContext *ctx)
{
    OpenAiClientContext *copy;

    if (!ctx)
        return NULL;
    copy = calloc(1, sizeof(*copy));
    if (!copy)
        return NULL;
    if (openai_meta_dup_members(copy, ctx, openai_meta_context_keys,
                                OPENAI_META_NKEYS(openai_meta_context_keys)) < 0)
        goto fail;
    if (ctx->user_location) {
        copy->user_location = calloc(1, sizeof(*copy->user_location));
        if (!copy->user_location ||
            openai_meta_dup_members(copy->user_location, ctx->user_location,
                                    openai_meta_location_keys,
                                    OPENAI_META_NKEYS(openai_meta_location_keys)) < 0)
            goto fail;
    }
    return copy;

fail:
    openai_meta_free(copy);
    return NULL;
}

void openai_meta_free(OpenAiClientContext *ctx)
{
    if (!ctx)
        return;
    if (ctx->user_location) {
        openai_meta_free_members(ctx->user_location, openai_meta_location_keys,
                                 OPENAI_META_NKEYS(openai_meta_location_keys));
        free(ctx->user_location);
    }
    openai_meta_free_members(ctx, openai_meta_context_keys,
                             OPENAI_META_NKEYS(openai_meta_context_keys));
    free(ctx);
}
