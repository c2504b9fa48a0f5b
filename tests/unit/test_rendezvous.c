/* test_rendezvous: unit tests for src/rendezvous.c.
 *
 * 10000 synthetic session ids are spread over a few nodes: the same key always lands on the
 * same node, shares follow the weights within a few percent, and removing or adding a node
 * moves only the keys that node loses or wins.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "mcpeek/rendezvous.h"

#define KEYS 10000

static uint64_t key_of(int i)
{
    char buf[64];
    int len = snprintf(buf, sizeof(buf), "session-%08x-%d", (unsigned)i * 2654435761u, i);
    return rendezvous_id(buf, (size_t)len);
}

static struct rendezvous_node node(const char *url, unsigned weight)
{
    struct rendezvous_node n = {rendezvous_id(url, strlen(url)), weight};
    return n;
}

static void test_stable(void **state)
{
    (void)state;
    struct rendezvous_node nodes[3] = {node("http://a:1/mcp", 1), node("http://b:1/mcp", 1),
                                       node("http://c:1/mcp", 1)};
    /* a copy in another order picks the same node by identity, not by position */
    struct rendezvous_node shuffled[3] = {nodes[2], nodes[0], nodes[1]};
    for (int i = 0; i < KEYS; i++) {
        uint64_t k = key_of(i);
        int a = rendezvous_pick(nodes, 3, NULL, k);
        int b = rendezvous_pick(nodes, 3, NULL, k);
        int c = rendezvous_pick(shuffled, 3, NULL, k);
        assert_true(a >= 0);
        assert_int_equal(a, b);
        assert_true(nodes[a].id == shuffled[c].id);
    }
}

/* Counts each node's keys and checks its share against weight / total within `tolerance`. */
static void check_shares(const struct rendezvous_node *nodes, size_t n, double tolerance)
{
    int count[8] = {0};
    unsigned total_weight = 0;
    for (size_t j = 0; j < n; j++)
        total_weight += nodes[j].weight;
    for (int i = 0; i < KEYS; i++) {
        int p = rendezvous_pick(nodes, n, NULL, key_of(i));
        assert_true(p >= 0 && (size_t)p < n);
        count[p]++;
    }
    for (size_t j = 0; j < n; j++) {
        double want = (double)nodes[j].weight / total_weight;
        double got = (double)count[j] / KEYS;
        print_message("node %zu weight %u: %d of %d keys (%.2f%%, expected %.2f%%)\n", j,
                      nodes[j].weight, count[j], KEYS, 100 * got, 100 * want);
        if (got < want - tolerance || got > want + tolerance)
            fail_msg("node %zu (weight %u): share %.4f, expected %.4f +- %.2f", j, nodes[j].weight,
                     got, want, tolerance);
    }
}

static void test_balanced_equal_weights(void **state)
{
    (void)state;
    struct rendezvous_node nodes[4] = {node("http://a:1/mcp", 1), node("http://b:1/mcp", 1),
                                       node("http://c:1/mcp", 1), node("http://d:1/mcp", 1)};
    /* binomial sd of a 25% share over 10000 keys is 0.43%: 2% is > 4 sd */
    check_shares(nodes, 4, 0.02);
}

static void test_balanced_with_weights(void **state)
{
    (void)state;
    struct rendezvous_node nodes[3] = {node("http://a:1/mcp", 1), node("http://b:1/mcp", 2),
                                       node("http://c:1/mcp", 5)};
    check_shares(nodes, 3, 0.02);
    struct rendezvous_node two[2] = {node("http://10.0.0.1:3000/mcp", 3),
                                     node("http://10.0.0.2:3000/mcp", 1)};
    check_shares(two, 2, 0.02);
}

static void test_zero_weight_and_ineligible_never_chosen(void **state)
{
    (void)state;
    struct rendezvous_node nodes[3] = {node("http://a:1/mcp", 1), node("http://b:1/mcp", 0),
                                       node("http://c:1/mcp", 1)};
    bool eligible[3] = {false, true, true};
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(rendezvous_pick(nodes, 3, eligible, key_of(i)), 2);
        assert_int_not_equal(rendezvous_pick(nodes, 3, NULL, key_of(i)), 1);
    }
    bool none[3] = {false, true, false};
    assert_int_equal(rendezvous_pick(nodes, 3, none, key_of(1)), -1);
    assert_int_equal(rendezvous_pick(nodes, 0, NULL, key_of(1)), -1);
}

/* A node leaving: exactly its own keys move, and they spread over the others. */
static void test_minimal_movement_on_leave(void **state)
{
    (void)state;
    struct rendezvous_node nodes[4] = {node("http://a:1/mcp", 1), node("http://b:1/mcp", 1),
                                       node("http://c:1/mcp", 1), node("http://d:1/mcp", 1)};
    bool without_b[4] = {true, false, true, true};
    int moved = 0, landed[4] = {0};
    for (int i = 0; i < KEYS; i++) {
        uint64_t k = key_of(i);
        int before = rendezvous_pick(nodes, 4, NULL, k);
        int after = rendezvous_pick(nodes, 4, without_b, k);
        if (before != 1) {
            assert_int_equal(before, after); /* keys of the others stay */
        } else {
            moved++;
            landed[after]++;
        }
    }
    assert_true(moved > KEYS / 4 - 300 && moved < KEYS / 4 + 300);
    for (int j = 0; j < 4; j++)
        if (j != 1)
            assert_true(landed[j] > moved / 3 - 200 && landed[j] < moved / 3 + 200);
}

/* A node joining: only keys it wins move, all of them to it, about 1/(n+1) of them. */
static void test_minimal_movement_on_join(void **state)
{
    (void)state;
    struct rendezvous_node nodes[4] = {node("http://a:1/mcp", 1), node("http://b:1/mcp", 1),
                                       node("http://c:1/mcp", 1), node("http://e:1/mcp", 1)};
    int moved = 0;
    for (int i = 0; i < KEYS; i++) {
        uint64_t k = key_of(i);
        int before = rendezvous_pick(nodes, 3, NULL, k);
        int after = rendezvous_pick(nodes, 4, NULL, k);
        if (before != after) {
            assert_int_equal(after, 3);
            moved++;
        }
    }
    assert_true(moved > KEYS / 4 - 300 && moved < KEYS / 4 + 300);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stable),
        cmocka_unit_test(test_balanced_equal_weights),
        cmocka_unit_test(test_balanced_with_weights),
        cmocka_unit_test(test_zero_weight_and_ineligible_never_chosen),
        cmocka_unit_test(test_minimal_movement_on_leave),
        cmocka_unit_test(test_minimal_movement_on_join),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
