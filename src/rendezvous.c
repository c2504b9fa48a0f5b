/* rendezvous: weighted rendezvous hashing (Thaler and Ravishankar; the weighted form is
 * the "logarithmic method" of Schindelhauer and Schomaker).
 *
 * The key's and node's identities are mixed with a 64-bit finaliser (splitmix64's), so that
 * FNV-1a's weak low bits do not leak into the score; the top 53 bits become u in (0,1).
 */
#include "mcpeek/rendezvous.h"

#include <math.h>

#include "mcpeek/hash.h"

uint64_t rendezvous_id(const char *name, size_t len)
{
    return hash_mix64(hash_fnv1a(name, len));
}

double rendezvous_score(uint64_t key_hash, const struct rendezvous_node *node)
{
    if (node->weight == 0)
        return -1.0;
    uint64_t x = hash_mix64(key_hash ^ hash_mix64(node->id + 0x9e3779b97f4a7c15ULL));
    /* (k + 0.5) / 2^53: strictly inside (0,1), so -ln(u) is finite and positive */
    double u = ((double)(x >> 11) + 0.5) / 9007199254740992.0;
    return (double)node->weight / -log(u);
}

int rendezvous_pick(const struct rendezvous_node *nodes, size_t n, const bool *eligible,
                    uint64_t key_hash)
{
    int best = -1;
    double best_score = 0.0;
    for (size_t i = 0; i < n; i++) {
        if ((eligible && !eligible[i]) || nodes[i].weight == 0)
            continue;
        double s = rendezvous_score(key_hash, &nodes[i]);
        if (best < 0 || s > best_score) {
            best = (int)i;
            best_score = s;
        }
    }
    return best;
}
