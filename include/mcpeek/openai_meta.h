/* openai_meta: reads ChatGPT's conversation hints out of a JSON-RPC `params._meta` object.
 *
 * The six `openai/...` keys are hints, never authorization. Strings are copied as they are,
 * numbers are rendered as decimal strings (older clients send `openai/session` as a number),
 * every other type is ignored. When no key is present no context is allocated at all, so
 * clients that are not ChatGPT pay nothing.
 */
#ifndef MCPEEK_OPENAI_META_H
#define MCPEEK_OPENAI_META_H

#include <stddef.h>

#include <jansson.h>

/* `openai/userLocation`: every member optional, each owned by the struct. latitude and
 * longitude are kept as decimal strings whether the client sent strings or numbers. */
struct openai_user_location {
    char *city;
    char *region;
    char *country;
    char *timezone;
    char *latitude;
    char *longitude;
};

/* Members are NUL-terminated strings, NULL when absent. The context, its location and its
 * strings are one allocation: free it only with openai_meta_free. */
typedef struct openai_client_context {
    char *session_id;                           /* openai/session */
    char *subject_id;                           /* openai/subject */
    char *organization_id;                      /* openai/organization */
    char *locale;                               /* openai/locale */
    char *user_agent;                           /* openai/userAgent */
    struct openai_user_location *user_location; /* openai/userLocation, NULL when absent */
} OpenAiClientContext;

/* Builds the context from a `_meta` value of a jansson tree (any type; only an object is
 * read). Each copied string is cut to at most `max_len` bytes, never inside a UTF-8 sequence.
 * Returns NULL when no usable openai key was present (then nothing is allocated) or on
 * allocation failure. */
OpenAiClientContext *openai_meta_from_json(const json_t *meta, size_t max_len);

/* The same on `len` bytes holding just a `_meta` value (tests, tools). NULL as above, and
 * also when the text is not valid JSON or not an object. */
OpenAiClientContext *openai_meta_parse(const char *json, size_t len, size_t max_len);

/* Deep copy (for the session map); NULL in, NULL out. */
OpenAiClientContext *openai_meta_dup(const OpenAiClientContext *ctx);

void openai_meta_free(OpenAiClientContext *ctx);

/* The context as a `_meta` object (the inverse of openai_meta_from_json, for the shared
 * state); an empty object for NULL, NULL when out of memory. The caller owns it. */
json_t *openai_meta_to_json(const OpenAiClientContext *ctx);

/* Length of the longest prefix of s[0..len) that is at most max_len bytes and well-formed
 * UTF-8: a cut never splits a character, and stops before the first malformed byte (jansson
 * never hands us one, but the cap must not trust that). jsonrpc.c caps its copies with it. */
size_t openai_meta_utf8_cut(const char *s, size_t len, size_t max_len);

/* Heap copy of s[0..len) with each embedded NUL replaced by U+FFFD, capped by
 * openai_meta_utf8_cut. NULL on allocation failure. */
char *openai_meta_copy(const char *s, size_t len, size_t max_len);

#endif
