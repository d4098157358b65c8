/*
 * arena.h - bump allocator made of chunks; everything is freed at once.
 *
 * Used for snapshots (boot/config tier) and per-request scratch memory. Not thread-safe:
 * one owner at a time. Allocations are 16-byte aligned.
 */
#ifndef RV_ARENA_H
#define RV_ARENA_H

#include "core/common.h"

typedef struct rv_arena_chunk_s rv_arena_chunk_t;

typedef struct rv_arena_s {
    rv_arena_chunk_t *head;     /* current chunk (newest) */
    size_t chunk_size;          /* default size of new chunks */
    size_t total;               /* bytes obtained from malloc, for memory reporting */
} rv_arena_t;

/* Initialise an arena whose chunks are chunk_size bytes (0: 16 KiB). No memory taken yet. */
void rv_arena_init(rv_arena_t *a, size_t chunk_size);

/* Allocate n bytes (uninitialised). Returns NULL when malloc fails. */
void *rv_arena_alloc(rv_arena_t *a, size_t n);

/* Allocate n zeroed bytes. */
void *rv_arena_calloc(rv_arena_t *a, size_t n);

/* Copy len bytes into the arena, NUL-terminated (the NUL is not counted). NULL on failure. */
char *rv_arena_strndup(rv_arena_t *a, const char *s, size_t len);

/* rv_str_t copy living in the arena; ptr NULL (len 0) on failure or empty input. */
rv_str_t rv_arena_str(rv_arena_t *a, rv_str_t s);

/* Free all chunks but the first, and rewind it: cheap reuse between requests. */
void rv_arena_reset(rv_arena_t *a);

/* Free every chunk. Accepts an arena that was only initialised. */
void rv_arena_free(rv_arena_t *a);

/* Overwrite every byte handed out so far with zeros (explicit_bzero: not optimised away), for
 * arenas that held key material; the arena stays usable. Call before rv_arena_free/reset. */
void rv_arena_wipe(rv_arena_t *a);

#define RV_ARENA_NEW(a, type)      ((type *)rv_arena_calloc((a), sizeof(type)))
#define RV_ARENA_NEWN(a, type, n)  ((type *)rv_arena_calloc((a), sizeof(type) * (size_t)(n)))

#endif
