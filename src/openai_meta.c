/* openai_meta: ChatGPT's `openai/...` hints in params._meta -> OpenAiClientContext.
 *
 * Type tolerant on purpose: strings are copied, JSON numbers become decimal strings, any other
 * type is skipped. Values are measured in the jansson tree first; the context is allocated (one
 * block) only once a usable key was found, so a client that is not ChatGPT costs a few hash
 * lookups and no malloc. Every copy is cut on a UTF-8 boundary and has each embedded NUL
 * replaced by U+FFFD, so it is a valid C string.
 */
#include "mcpeek/openai_meta.h"
#include "mcpeek/strbuf.h"

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

#define OPENAI_META_KEY(name, type, member)                                                        \
    {                                                                                              \
        name, offsetof(type, member)                                                               \
    }

static const struct openai_meta_key openai_meta_context_keys[] = {
    OPENAI_META_KEY("openai/session", OpenAiClientContext, session_id),
    OPENAI_META_KEY("openai/subject", OpenAiClientContext, subject_id),
    OPENAI_META_KEY("openai/organization", OpenAiClientContext, organization_id),
    OPENAI_META_KEY("openai/locale", OpenAiClientContext, locale),
    OPENAI_META_KEY("openai/userAgent", OpenAiClientContext, user_agent),
};

static const struct openai_meta_key openai_meta_location_keys[] = {
    OPENAI_META_KEY("city", struct openai_user_location, city),
    OPENAI_META_KEY("region", struct openai_user_location, region),
    OPENAI_META_KEY("country", struct openai_user_location, country),
    OPENAI_META_KEY("timezone", struct openai_user_location, timezone),
    OPENAI_META_KEY("latitude", struct openai_user_location, latitude),
    OPENAI_META_KEY("longitude", struct openai_user_location, longitude),
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
        n = utf8_seq_len(u + i, len - i);
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

/* One value to store: `plain[0..len)`, from the tree or formatted into a caller's buffer;
 * `owned` is a NUL-marked copy (see openai_meta_copy) freed after packing. */
struct openai_meta_text {
    const char *plain;
    size_t len;
    char *owned;
};

/* Room a value needs (0 when unusable: not a string or number, or out of memory); a number is
 * formatted into `num` first: integers as "%lld", reals by openai_meta_format_real. */
static size_t openai_meta_measure(const json_t *v, size_t max_len, char *num,
                                  struct openai_meta_text *t)
{
    const char *s;
    size_t len;

    memset(t, 0, sizeof(*t));
    if (json_is_string(v)) {
        s = json_string_value(v);
        len = json_string_length(v);
        if (memchr(s, '\0', len)) { /* "\u0000": rare, so the copy may allocate */
            if (!(t->owned = openai_meta_copy(s, len, max_len)))
                return 0;
            s = t->owned;
            len = strlen(s);
        }
    } else if (json_is_integer(v)) {
        snprintf(num, OPENAI_META_NUMBUF, "%lld", (long long)json_integer_value(v));
        s = num;
        len = strlen(num);
    } else if (json_is_real(v)) {
        openai_meta_format_real(json_real_value(v), num, OPENAI_META_NUMBUF);
        s = num;
        len = strlen(num);
    } else {
        return 0;
    }
    t->plain = s;
    t->len = openai_meta_utf8_cut(s, len, max_len);
    return t->len + 1;
}

static char *openai_meta_store(const struct openai_meta_text *t, char **p)
{
    char *s = *p;
    memcpy(s, t->plain, t->len);
    s[t->len] = '\0';
    *p += t->len + 1;
    return s;
}

#define OPENAI_META_NCTX OPENAI_META_NKEYS(openai_meta_context_keys)
#define OPENAI_META_NLOC OPENAI_META_NKEYS(openai_meta_location_keys)

/* Allocates the block for `n_ctx` + `n_loc` texts and fills the members. */
static OpenAiClientContext *openai_meta_pack(const struct openai_meta_text *ctx_text,
                                             const struct openai_meta_text *loc_text, bool have_loc,
                                             size_t size)
{
    size += sizeof(OpenAiClientContext) + (have_loc ? sizeof(struct openai_user_location) : 0);
    char *block = malloc(size);
    if (!block)
        return NULL;
    OpenAiClientContext *ctx = (OpenAiClientContext *)block;
    char *p = block + sizeof(*ctx);
    memset(ctx, 0, sizeof(*ctx));
    if (have_loc) {
        ctx->user_location = (struct openai_user_location *)p;
        memset(ctx->user_location, 0, sizeof(*ctx->user_location));
        p += sizeof(*ctx->user_location);
    }
    for (size_t i = 0; i < OPENAI_META_NCTX; i++)
        if (ctx_text[i].plain)
            *openai_meta_slot(ctx, &openai_meta_context_keys[i]) =
                openai_meta_store(&ctx_text[i], &p);
    for (size_t i = 0; have_loc && i < OPENAI_META_NLOC; i++)
        if (loc_text[i].plain)
            *openai_meta_slot(ctx->user_location, &openai_meta_location_keys[i]) =
                openai_meta_store(&loc_text[i], &p);
    return ctx;
}

OpenAiClientContext *openai_meta_from_json(const json_t *meta, size_t max_len)
{
    struct openai_meta_text ctx_text[OPENAI_META_NCTX], loc_text[OPENAI_META_NLOC];
    char nums[OPENAI_META_NCTX + OPENAI_META_NLOC][OPENAI_META_NUMBUF];
    size_t size = 0, need;
    bool have_ctx = false, have_loc = false;
    OpenAiClientContext *ctx = NULL;

    if (!json_is_object(meta))
        return NULL;
    for (size_t i = 0; i < OPENAI_META_NCTX; i++) {
        need = openai_meta_measure(json_object_get(meta, openai_meta_context_keys[i].name), max_len,
                                   nums[i], &ctx_text[i]);
        have_ctx |= need > 0;
        size += need;
    }
    const json_t *loc = json_object_get(meta, "openai/userLocation");
    for (size_t i = 0; i < OPENAI_META_NLOC; i++) {
        need = openai_meta_measure(json_object_get(loc, openai_meta_location_keys[i].name), max_len,
                                   nums[OPENAI_META_NCTX + i], &loc_text[i]);
        have_loc |= need > 0;
        size += need;
    }
    if (have_ctx || have_loc) /* else no usable key: nothing allocated */
        ctx = openai_meta_pack(ctx_text, loc_text, have_loc, size);
    for (size_t i = 0; i < OPENAI_META_NCTX; i++)
        free(ctx_text[i].owned);
    for (size_t i = 0; i < OPENAI_META_NLOC; i++)
        free(loc_text[i].owned);
    return ctx;
}

OpenAiClientContext *openai_meta_parse(const char *json, size_t len, size_t max_len)
{
    json_t *meta = json_loadb(json, len, JSON_ALLOW_NUL, NULL);
    OpenAiClientContext *ctx = openai_meta_from_json(meta, max_len);
    json_decref(meta);
    return ctx;
}

OpenAiClientContext *openai_meta_dup(const OpenAiClientContext *ctx)
{
    struct openai_meta_text ctx_text[OPENAI_META_NCTX], loc_text[OPENAI_META_NLOC];
    size_t size = 0;
    const char *v;

    if (!ctx)
        return NULL;
    memset(ctx_text, 0, sizeof(ctx_text));
    memset(loc_text, 0, sizeof(loc_text));
    for (size_t i = 0; i < OPENAI_META_NCTX; i++)
        if ((v = openai_meta_get(ctx, &openai_meta_context_keys[i])) != NULL) {
            ctx_text[i].plain = v;
            ctx_text[i].len = strlen(v);
            size += ctx_text[i].len + 1;
        }
    for (size_t i = 0; ctx->user_location && i < OPENAI_META_NLOC; i++)
        if ((v = openai_meta_get(ctx->user_location, &openai_meta_location_keys[i])) != NULL) {
            loc_text[i].plain = v;
            loc_text[i].len = strlen(v);
            size += loc_text[i].len + 1;
        }
    return openai_meta_pack(ctx_text, loc_text, ctx->user_location != NULL, size);
}

void openai_meta_free(OpenAiClientContext *ctx)
{
    free(ctx); /* one block: see openai_meta_pack */
}

json_t *openai_meta_to_json(const OpenAiClientContext *ctx)
{
    json_t *meta = json_object(), *loc = NULL;
    const char *v;

    if (!meta || !ctx)
        return meta;
    for (size_t i = 0; i < OPENAI_META_NCTX; i++)
        if ((v = openai_meta_get(ctx, &openai_meta_context_keys[i])) != NULL)
            json_object_set_new(meta, openai_meta_context_keys[i].name, json_string(v));
    if (ctx->user_location && (loc = json_object()) != NULL) {
        for (size_t i = 0; i < OPENAI_META_NLOC; i++)
            if ((v = openai_meta_get(ctx->user_location, &openai_meta_location_keys[i])) != NULL)
                json_object_set_new(loc, openai_meta_location_keys[i].name, json_string(v));
        json_object_set_new(meta, "openai/userLocation", loc);
    }
    return meta;
}
