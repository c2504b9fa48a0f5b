/* openai_meta: ChatGPT's `openai/...` hints in params._meta -> OpenAiClientContext.
 *
 * Type tolerant on purpose: strings are copied, JSON numbers become decimal strings, any other
 * type is skipped. The scan only records where the values are (json_scan spans); the context is
 * allocated only once a usable key was found, so a client that is not ChatGPT costs a few key
 * compares and no malloc. Every copy is cut on a UTF-8 boundary and has each embedded NUL
 * replaced by U+FFFD, so it is a valid C string.
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
    size_t name_len;
    size_t offset;
};

#define OPENAI_META_KEY(name, type, member)                                                        \
    {                                                                                              \
        name, sizeof(name) - 1, offsetof(type, member)                                             \
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

_Static_assert(OPENAI_META_NKEYS(openai_meta_context_keys) ==
                   sizeof(((struct openai_meta_found *)0)->context) /
                       sizeof(struct json_scan_value),
               "openai_meta_found.context has one slot per context key");
_Static_assert(OPENAI_META_NKEYS(openai_meta_location_keys) ==
                   sizeof(((struct openai_meta_found *)0)->location) /
                       sizeof(struct json_scan_value),
               "openai_meta_found.location has one slot per location key");

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
        n = json_scan_utf8_len(u + i, len - i);
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

/* True when a number's own spelling is what openai_meta_format_number would print, so the common
 * latitude/longitude skips strtod and snprintf: an integer of at most 18 digits (always a long
 * long) other than -0, or a plain decimal without exponent or trailing zero, of at most 15
 * significant digits (DBL_DIG: such a decimal survives the trip through a double) and within
 * 1e-4 <= |v| < 1e15, where "%.15g" prints no exponent. */
static bool openai_meta_plain_number(const struct json_scan_value *v)
{
    const char *p = v->text, *end = v->text + v->len, *dot;
    size_t int_digits, zeros = 0, frac_digits;

    if (*p == '-')
        p++;
    if (v->integer)
        return end - p <= 18 && !(p != v->text && *p == '0');
    dot = memchr(p, '.', (size_t)(end - p));
    if (!dot || memchr(dot, 'e', (size_t)(end - dot)) || memchr(dot, 'E', (size_t)(end - dot)) ||
        end[-1] == '0')
        return false;
    int_digits = (size_t)(dot - p);
    frac_digits = (size_t)(end - dot - 1);
    if (int_digits == 1 && *p == '0') { /* 0.000ddd: leading zeros are not significant */
        while (dot[1 + zeros] == '0')
            zeros++;
        return zeros <= 3 && frac_digits - zeros <= 15;
    }
    return int_digits + frac_digits <= 15;
}

/* A number as a decimal string: integers as "%lld", reals by openai_meta_format_real. A number
 * that fits neither (jansson refused those; the scanner accepts any RFC 8259 number) is kept as
 * it was spelled. */
static void openai_meta_format_number(const struct json_scan_value *v, char *buf, size_t size,
                                      const char **s, size_t *len)
{
    long long i;
    double d;

    if (openai_meta_plain_number(v)) {
        *s = v->text;
        *len = v->len;
        return;
    }
    if (v->integer && json_scan_int64(v, &i) == 0) {
        snprintf(buf, size, "%lld", i);
    } else if (!v->integer && json_scan_double(v, &d) == 0) {
        openai_meta_format_real(d, buf, size);
    } else {
        *s = v->text;
        *len = v->len;
        return;
    }
    *s = buf;
    *len = strlen(buf);
}

/* Index of `key` in `keys`, or n. */
static size_t openai_meta_lookup(const struct json_scan_value *key,
                                 const struct openai_meta_key *keys, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (json_scan_string_eq(key, keys[i].name, keys[i].name_len))
            break;
    return i;
}

/* Consumes an object's value at the cursor, recording the members named in `keys` into
 * values[] (reset first: a later duplicate replaces an earlier one whole). Any other type is
 * skipped and records nothing. */
static int openai_meta_scan_object(struct json_scan *sc, const struct openai_meta_key *keys,
                                   size_t n, struct json_scan_value *values, bool with_location,
                                   struct json_scan_value *location)
{
    struct json_scan_value key;
    size_t i;
    int r;

    memset(values, 0, n * sizeof(*values));
    if (json_scan_peek(sc) != JSON_SCAN_OBJECT)
        return json_scan_value(sc, NULL);
    if (json_scan_enter(sc) < 0)
        return -1;
    while ((r = json_scan_member(sc, &key)) == 1) {
        i = openai_meta_lookup(&key, keys, n);
        if (i < n)
            r = json_scan_value(sc, &values[i]);
        else if (with_location && json_scan_string_is(&key, "openai/userLocation"))
            r = openai_meta_scan_object(sc, openai_meta_location_keys,
                                        OPENAI_META_NKEYS(openai_meta_location_keys), location,
                                        false, NULL);
        else
            r = json_scan_value(sc, NULL);
        if (r < 0)
            return -1;
    }
    return r;
}

int openai_meta_scan(struct json_scan *sc, struct openai_meta_found *found)
{
    memset(found, 0, sizeof(*found));
    return openai_meta_scan_object(sc, openai_meta_context_keys,
                                   OPENAI_META_NKEYS(openai_meta_context_keys), found->context,
                                   true, found->location);
}

/* A context lives in one allocation: the struct, its location, then every string. Building,
 * copying (session map) and freeing one costs a single malloc and free, where a member per
 * allocation cost a dozen of each per request. */
struct openai_meta_text {
    const struct json_scan_value *string; /* decode from the body, or */
    const char *plain;                    /* copy these bytes (numbers, dup) */
    size_t len;                           /* upper bound of the stored bytes */
};

/* Room a value needs (0 when unusable); a number is formatted into `num` first. */
static size_t openai_meta_measure(const struct json_scan_value *v, size_t max_len, char *num,
                                  struct openai_meta_text *t)
{
    memset(t, 0, sizeof(*t));
    if (v->type == JSON_SCAN_STRING) {
        t->string = v;
        t->len = v->len < max_len ? v->len : max_len; /* decoding never grows a string */
        return t->len + 1;
    }
    if (v->type != JSON_SCAN_NUMBER)
        return 0;
    openai_meta_format_number(v, num, OPENAI_META_NUMBUF, &t->plain, &t->len);
    t->len = openai_meta_utf8_cut(t->plain, t->len, max_len);
    return t->len + 1;
}

static char *openai_meta_store(const struct openai_meta_text *t, char **p)
{
    char *s = *p;
    size_t n = t->len;
    if (t->string)
        n = json_scan_decode(t->string, s, t->len, JSON_SCAN_NUL_AS_FFFD);
    else
        memcpy(s, t->plain, n);
    s[n] = '\0';
    *p += n + 1;
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
        if (ctx_text[i].string || ctx_text[i].plain)
            *openai_meta_slot(ctx, &openai_meta_context_keys[i]) =
                openai_meta_store(&ctx_text[i], &p);
    for (size_t i = 0; have_loc && i < OPENAI_META_NLOC; i++)
        if (loc_text[i].string || loc_text[i].plain)
            *openai_meta_slot(ctx->user_location, &openai_meta_location_keys[i]) =
                openai_meta_store(&loc_text[i], &p);
    return ctx;
}

OpenAiClientContext *openai_meta_build(const struct openai_meta_found *found, size_t max_len)
{
    struct openai_meta_text ctx_text[OPENAI_META_NCTX], loc_text[OPENAI_META_NLOC];
    char nums[OPENAI_META_NCTX + OPENAI_META_NLOC][OPENAI_META_NUMBUF];
    size_t size = 0, need;
    bool have_ctx = false, have_loc = false;

    for (size_t i = 0; i < OPENAI_META_NCTX; i++) {
        need = openai_meta_measure(&found->context[i], max_len, nums[i], &ctx_text[i]);
        have_ctx |= need > 0;
        size += need;
    }
    for (size_t i = 0; i < OPENAI_META_NLOC; i++) {
        need = openai_meta_measure(&found->location[i], max_len, nums[OPENAI_META_NCTX + i],
                                   &loc_text[i]);
        have_loc |= need > 0;
        size += need;
    }
    if (!have_ctx && !have_loc)
        return NULL; /* no usable key: nothing allocated */
    return openai_meta_pack(ctx_text, loc_text, have_loc, size);
}

OpenAiClientContext *openai_meta_parse(const char *json, size_t len, size_t max_len)
{
    struct openai_meta_found found;
    struct json_scan sc;

    json_scan_init(&sc, json, len);
    if (json_scan_peek(&sc) != JSON_SCAN_OBJECT)
        return NULL;
    if (openai_meta_scan(&sc, &found) < 0 || json_scan_end(&sc) < 0)
        return NULL;
    return openai_meta_build(&found, max_len);
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
