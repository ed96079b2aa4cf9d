/*
 * tok_map.c - the tokenizer's open-addressing hash map from byte strings to int32 values
 * (token text -> id, BPE merge "left right" -> rank). FNV-1a hashing, linear probing, a
 * table sized once at init to at least twice the expected entries and never grown, so a
 * lookup always ends at an empty slot. Keys are borrowed: the caller keeps them alive (they
 * live in the vocabulary's pools). Called by tok_vocab.c; read by every encoder.
 */
#include "tok_int.h"

#include <stdlib.h>
#include <string.h>

/* Cap on the expected entries: far above any real vocabulary or merge list (a few hundred
 * thousand), low enough that the slot arrays cannot overflow size_t. */
#define TOK_MAP_MAX_ENTRIES (1u << 26)

static uint64_t tok_map_hash(const char *key, size_t len)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a 64-bit offset basis */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 1099511628211ull;
    }
    return h;
}

mica_status tok_map_init(tok_map *m, uint64_t n_expected)
{
    memset(m, 0, sizeof *m);
    if (n_expected > TOK_MAP_MAX_ENTRIES) return MICA_ENOMEM;
    uint64_t n = 16;
    while (n < 2 * n_expected) n <<= 1;
    m->keys = core_calloc(n, sizeof *m->keys);
    m->key_lens = core_calloc(n, sizeof *m->key_lens);
    m->vals = core_calloc(n, sizeof *m->vals);
    if (!m->keys || !m->key_lens || !m->vals) {
        tok_map_free(m);
        return MICA_ENOMEM;
    }
    m->n_slots = n;
    return MICA_OK;
}

/* The slot holding key, or the empty slot where it would go; n_slots when the table is full
 * of other keys (only possible if the caller put more than it announced). */
static uint64_t tok_map_slot(const tok_map *m, const char *key, size_t len)
{
    uint64_t mask = m->n_slots - 1;
    uint64_t i = tok_map_hash(key, len) & mask;
    for (uint64_t probe = 0; probe < m->n_slots; probe++, i = (i + 1) & mask) {
        if (!m->keys[i]) return i;
        if (m->key_lens[i] == len && memcmp(m->keys[i], key, len) == 0) return i;
    }
    return m->n_slots;
}

bool tok_map_put(tok_map *m, const char *key, uint32_t len, int32_t val)
{
    if (m->n_slots == 0) return false;
    uint64_t i = tok_map_slot(m, key, len);
    if (i == m->n_slots || m->keys[i]) return false; /* full, or present: first value wins */
    m->keys[i] = key;
    m->key_lens[i] = len;
    m->vals[i] = val;
    return true;
}

int32_t tok_map_get(const tok_map *m, const char *key, size_t len)
{
    if (m->n_slots == 0 || len > UINT32_MAX) return -1;
    uint64_t i = tok_map_slot(m, key, len);
    if (i == m->n_slots || !m->keys[i]) return -1;
    return m->vals[i];
}

void tok_map_free(tok_map *m)
{
    free(m->keys);
    free(m->key_lens);
    free(m->vals);
    memset(m, 0, sizeof *m);
}
