/* arena.c - chunked bump allocator (see arena.h for the contract). */
#include "core/arena.h"

#include <stdlib.h>
#include <string.h>

struct rv_arena_chunk_s {
    rv_arena_chunk_t *next;
    size_t size;    /* usable bytes in data[] */
    size_t used;
    _Alignas(16) unsigned char data[];
};

void rv_arena_init(rv_arena_t *a, size_t chunk_size)
{
    a->head = NULL;
    a->chunk_size = chunk_size ? chunk_size : 16384;
    a->total = 0;
}

static rv_arena_chunk_t *chunk_new(rv_arena_t *a, size_t need)
{
    size_t size = need > a->chunk_size ? need : a->chunk_size;
    rv_arena_chunk_t *c = malloc(sizeof(*c) + size);
    if (!c)
        return NULL;
    c->size = size;
    c->used = 0;
    c->next = a->head;
    a->head = c;
    a->total += sizeof(*c) + size;
    return c;
}

void *rv_arena_alloc(rv_arena_t *a, size_t n)
{
    if (n == 0)
        n = 1;
    size_t need = (n + 15) & ~(size_t)15;
    if (need < n)
        return NULL;
    rv_arena_chunk_t *c = a->head;
    if (!c || c->size - c->used < need) {
        c = chunk_new(a, need);
        if (!c)
            return NULL;
    }
    void *p = c->data + c->used;
    c->used += need;
    return p;
}

void *rv_arena_calloc(rv_arena_t *a, size_t n)
{
    void *p = rv_arena_alloc(a, n);
    if (p)
        memset(p, 0, n);
    return p;
}

char *rv_arena_strndup(rv_arena_t *a, const char *s, size_t len)
{
    char *p = rv_arena_alloc(a, len + 1);
    if (!p)
        return NULL;
    if (len)
        memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

rv_str_t rv_arena_str(rv_arena_t *a, rv_str_t s)
{
    if (s.len == 0)
        return (rv_str_t){ "", 0 };
    char *p = rv_arena_strndup(a, s.ptr, s.len);
    return p ? (rv_str_t){ p, s.len } : RV_STR_NULL;
}

void rv_arena_reset(rv_arena_t *a)
{
    rv_arena_chunk_t *c = a->head;
    if (!c)
        return;
    /* keep the oldest chunk (the tail), free the rest */
    while (c->next) {
        rv_arena_chunk_t *n = c->next;
        a->total -= sizeof(*c) + c->size;
        free(c);
        c = n;
    }
    c->used = 0;
    a->head = c;
}

void rv_arena_free(rv_arena_t *a)
{
    rv_arena_chunk_t *c = a->head;
    while (c) {
        rv_arena_chunk_t *n = c->next;
        free(c);
        c = n;
    }
    a->head = NULL;
    a->total = 0;
}

void rv_arena_wipe(rv_arena_t *a)
{
    for (rv_arena_chunk_t *c = a->head; c; c = c->next)
        explicit_bzero(c->data, c->used);
}
