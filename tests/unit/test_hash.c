/* test_hash: unit tests for src/hash.c (SipHash-2-4 and its random key).
 *
 * The vectors are the SipHash paper's (key 00 01 .. 0f, message 00 01 .. len-1).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "mcpeek/hash.h"

static void siphash_matches_the_reference_vectors(void **state)
{
    (void)state;
    static const struct {
        size_t len;
        uint64_t want;
    } vectors[] = {
        {0, 0x726fdb47dd0e0e31ULL}, {1, 0x74f839c593dc67fdULL},  {7, 0xab0200f58b01d137ULL},
        {8, 0x93f5f5799a932462ULL}, {15, 0xa129ca6149be45e5ULL}, {63, 0x958a324ceb064572ULL},
    };
    unsigned char key[HASH_KEY_SIZE], msg[64];
    for (size_t i = 0; i < sizeof(key); i++)
        key[i] = (unsigned char)i;
    for (size_t i = 0; i < sizeof(msg); i++)
        msg[i] = (unsigned char)i;
    for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
        uint64_t got = hash_siphash(key, msg, vectors[i].len);
        if (got != vectors[i].want)
            fail_msg("length %zu: %016llx, expected %016llx", vectors[i].len,
                     (unsigned long long)got, (unsigned long long)vectors[i].want);
    }
}

static void random_keys_differ_and_change_the_hash(void **state)
{
    (void)state;
    unsigned char a[HASH_KEY_SIZE], b[HASH_KEY_SIZE];
    assert_int_equal(hash_random_key(a), 0);
    assert_int_equal(hash_random_key(b), 0);
    assert_memory_not_equal(a, b, HASH_KEY_SIZE);
    const char id[] = "3f2b7c1e-8d4a-4b6e-9a51-0c7d2e9f1a34";
    assert_int_not_equal(hash_siphash(a, id, strlen(id)), hash_siphash(b, id, strlen(id)));
    assert_int_equal(hash_siphash(a, id, strlen(id)), hash_siphash(a, id, strlen(id)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(siphash_matches_the_reference_vectors),
        cmocka_unit_test(random_keys_differ_and_change_the_hash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
