/* session_map: Mcp-Session-Id -> the last OpenAiClientContext seen with it, and the
 * upstream that issued the session.
 *
 * Lets the log line of a GET stream or a DELETE (no body, so no _meta) still name the
 * ChatGPT conversation, and with several upstreams sends a session's requests to its own. Bounded
 * twice: at most `capacity` entries (least recently used evicted) and entries older than `ttl_ms`
 * are treated as absent. Shared by all workers: sharded by hash with one mutex per shard, taken
 * only when a request has a session id.
 */
#ifndef MCPEEK_SESSION_MAP_H
#define MCPEEK_SESSION_MAP_H

#include <stddef.h>
#include <stdint.h>

#include "mcpeek/openai_meta.h"

struct session_map;

/* NULL on allocation failure. capacity 0 disables the map (every call is a no-op). */
struct session_map *session_map_new(size_t capacity, uint32_t ttl_ms);
void session_map_free(struct session_map *map);

/* Stores a deep copy of `ctx` for `session_id` (replacing any older one); now_ms is a
 * monotonic clock in milliseconds. Returns 0, or -1 on allocation failure (map unchanged). */
int session_map_put(struct session_map *map, const char *session_id, const OpenAiClientContext *ctx,
                    uint64_t now_ms);

/* Remembers the upstream (rendezvous_id of its URL, nonzero) that issued the session,
 * keeping any context. 0, or -1 on allocation failure. Refreshes the TTL. */
int session_map_put_upstream(struct session_map *map, const char *session_id, uint64_t upstream,
                             uint64_t now_ms);

/* The upstream remembered for the session, or 0 when unknown or expired. */
uint64_t session_map_upstream(struct session_map *map, const char *session_id, uint64_t now_ms);

/* Returns a deep copy the caller frees with openai_meta_free(), or NULL when unknown or
 * expired, or when only the upstream is known. A hit refreshes the entry's LRU position (not its
 * TTL). */
OpenAiClientContext *session_map_get(struct session_map *map, const char *session_id,
                                     uint64_t now_ms);

/* Forgets a session (after a successful DELETE). */
void session_map_remove(struct session_map *map, const char *session_id);

/* Live entries (approximate under concurrency; for metrics). */
size_t session_map_size(struct session_map *map);

/* The shard `session_id` lives in (tests: the layout depends on the map's random key). */
size_t session_map_shard_index(const struct session_map *map, const char *session_id);

#endif
