/*
 * discovery-view.c - the immutable, refcounted endpoint views the watcher hands to the control
 * thread, and the instance blocks they share with the state (a view costs O(services), not
 * O(instances)). Views are built on the watcher thread and released on any thread.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "control/discovery-internal.h"

static int str_cmp(const void *x, const void *y)
{
    return strcmp(*(char *const *)x, *(char *const *)y);
}

void rv_disc_view_ref(rv_disc_view_t *v)
{
    if (v)
        atomic_fetch_add_explicit(&v->refs, 1, memory_order_relaxed);
}

iblk_t *disc_iblk_new(size_t chunk)
{
    iblk_t *b = malloc(sizeof(*b));
    if (!b)
        return NULL;
    atomic_init(&b->refs, 1);
    rv_arena_init(&b->a, chunk);
    return b;
}

void disc_iblk_release(iblk_t *b)
{
    if (!b || atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1)
        return;
    rv_arena_free(&b->a);
    free(b);
}

void rv_disc_view_release(rv_disc_view_t *v)
{
    if (!v || atomic_fetch_sub_explicit(&v->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (uint32_t i = 0; i < v->nblks; i++)
        disc_iblk_release(v->blks[i]);
    rv_arena_free(&v->arena);
    free(v);
}

const rv_disc_svc_t *rv_disc_find(const rv_disc_view_t *v, const char *name)
{
    uint32_t lo = 0, hi = v ? v->nsvcs : 0;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        int r = strcmp(v->svcs[mid].name.ptr, name);
        if (r == 0)
            return &v->svcs[mid];
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static rv_str_t vcopy(rv_arena_t *a, rv_str_t s, bool *oom)
{
    rv_str_t r = rv_arena_str(a, s);
    if (!r.ptr)
        *oom = true;
    return r;
}

rv_disc_view_t *rv_disc_view_build(rv_disc_state_t *st)
{
    rv_disc_view_t *v = calloc(1, sizeof(*v));
    bool oom = false;
    if (!v)
        return NULL;
    rv_arena_init(&v->arena, 256 * 1024);
    atomic_init(&v->refs, 1);
    v->health = st->health;
    v->synced = st->ndcs_read > 0;
    if (st->n && !(v->svcs = RV_ARENA_NEWN(&v->arena, rv_disc_svc_t, st->n)))
        goto fail;
    v->nsvcs = st->n;
    uint32_t nblk = 0;
    for (uint32_t i = 0; i < st->n; i++)
        for (uint32_t d = 0; d < st->svcs[i]->ndcs; d++)
            nblk += st->svcs[i]->dcs[d].blk != NULL;
    if (nblk && !(v->blks = RV_ARENA_NEWN(&v->arena, iblk_t *, nblk)))
        goto fail;
    /* take the blocks first: from here on a failure releases them with the view */
    for (uint32_t i = 0; i < st->n; i++)
        for (uint32_t d = 0; d < st->svcs[i]->ndcs; d++) {
            iblk_t *b = st->svcs[i]->dcs[d].blk;
            if (b) {
                atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
                v->blks[v->nblks++] = b;
            }
        }
    for (uint32_t i = 0; i < st->n && !oom; i++) {
        const ssvc_t *s = st->svcs[i];
        rv_disc_svc_t *o = &v->svcs[i];
        o->name = vcopy(&v->arena, rv_cstr(s->name), &oom);
        o->known = true;
        uint32_t ninst = 0, ntag = 0;
        for (uint32_t d = 0; d < s->ndcs; d++) {
            ninst += s->dcs[d].ninsts;
            ntag += s->dcs[d].ntags;
            o->known &= s->dcs[d].known;
        }
        v->synced &= o->known;
        o->dcs = RV_ARENA_NEWN(&v->arena, rv_str_t, s->ndcs ? s->ndcs : 1);
        o->tags = RV_ARENA_NEWN(&v->arena, rv_str_t, ntag ? ntag : 1);
        /* one datacenter (the usual case): the state's array itself; several: the instance
         * structs side by side (their strings, tags and addresses stay in the blocks) */
        uint32_t ndc_inst = 0;
        for (uint32_t d = 0; d < s->ndcs; d++)
            ndc_inst += s->dcs[d].ninsts > 0;
        if (ndc_inst == 1) {
            for (uint32_t d = 0; d < s->ndcs; d++)
                if (s->dcs[d].ninsts)
                    o->insts = s->dcs[d].insts;
        } else {
            o->insts = RV_ARENA_NEWN(&v->arena, rv_disc_inst_t, ninst ? ninst : 1);
        }
        char **tmp = ntag ? malloc(ntag * sizeof(char *)) : NULL;
        if (!o->dcs || !o->tags || (!o->insts && ndc_inst != 1) || (ntag && !tmp)) {
            free(tmp);
            goto fail;
        }
        uint32_t nt = 0;
        for (uint32_t d = 0; d < s->ndcs; d++) {
            const sdc_t *sd = &s->dcs[d];
            rv_str_t dc = vcopy(&v->arena, rv_cstr(sd->dc), &oom);
            o->dcs[o->ndcs++] = dc;
            for (uint32_t t = 0; t < sd->ntags; t++)
                tmp[nt++] = sd->tags[t];
            if (ndc_inst != 1 && sd->ninsts)
                memcpy(&o->insts[o->ninsts], sd->insts, sd->ninsts * sizeof(rv_disc_inst_t));
            o->ninsts += sd->ninsts;
            for (uint32_t k = 0; k < sd->ninsts; k++)
                v->npassing += sd->insts[k].passing;
            v->ninsts += sd->ninsts;
        }
        if (nt > 1)
            qsort(tmp, nt, sizeof(char *), str_cmp);
        for (uint32_t t = 0; t < nt && !oom; t++)
            if (t == 0 || strcmp(tmp[t], tmp[t - 1]))
                o->tags[o->ntags++] = vcopy(&v->arena, rv_cstr(tmp[t]), &oom);
        free(tmp);
    }
    if (oom)
        goto fail;
    return v;
fail:
    rv_disc_view_release(v);
    return NULL;
}
