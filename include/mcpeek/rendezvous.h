/* rendezvous: weighted highest-random-weight hashing, to pick one upstream per key.
 *
 * Every (key, node) pair gets a pseudo-random score; the key goes to the eligible node with
 * the highest one. Scores are weight / -ln(u) with u uniform in (0,1), which gives each node a
 * share proportional to its weight, and a node that leaves or joins moves only the keys it
 * wins or loses: the others keep their node. Pure functions, no state, no allocation.
 */
#ifndef MCPEEK_RENDEZVOUS_H
#define MCPEEK_RENDEZVOUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct rendezvous_node {
    uint64_t id;     /* stable identity of the node: hash of its name (rendezvous_id) */
    unsigned weight; /* >= 1; 0 makes the node never chosen */
};

/* The identity of a node named `name` (the upstream URL). */
uint64_t rendezvous_id(const char *name, size_t len);

/* The score of `key_hash` (rendezvous_id of the key) on `node`; higher wins. */
double rendezvous_score(uint64_t key_hash, const struct rendezvous_node *node);

/* Index of the node with the highest score among those with eligible[i] true (all when
 * `eligible` is NULL); -1 when none is eligible or n is 0. Ties go to the lower index. */
int rendezvous_pick(const struct rendezvous_node *nodes, size_t n, const bool *eligible,
                    uint64_t key_hash);

#endif
