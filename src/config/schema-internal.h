/*
 * schema-internal.h - what the schema files (schema.c, schema-upstream.c) share: the field
 * table macros and the node helpers their checks use. Not for the rest of config/.
 */
#ifndef RV_CONFIG_SCHEMA_INTERNAL_H
#define RV_CONFIG_SCHEMA_INTERNAL_H

#include "config/config-internal.h"

#define FLD(n, t, ...) { .name = (n), .type = (t), __VA_ARGS__ }
#define OFF(T, f)      .off = (uint16_t)offsetof(T, f)
#define SETF(T, f)     .set_off = (uint16_t)offsetof(T, f)
#define UNSUP(n)       FLD(n, F_UNSUP)
#define IGN(n)         FLD(n, F_IGNORE)
#define DESC(var, T, fl, chk) \
    static const msgdesc_t var = { #T, sizeof(T), fl, (uint32_t)RV_ARRAY_LEN(fl), chk, false }
/* The same, for a descriptor the other schema file refers to (declared below). */
#define DESC_SHARED(var, T, fl, chk) \
    const msgdesc_t var = { #T, sizeof(T), fl, (uint32_t)RV_ARRAY_LEN(fl), chk, false }

/* The node of field camel of mapping n (n itself when absent), and of element i of its list
 * field camel (the list, or n, when there is no such element): where an error points. */
const ynode_t *schema_fnode(const ynode_t *n, const char *camel);
const ynode_t *schema_elem_node(const ynode_t *n, const char *camel, uint32_t i);

/* Whether s has a control character (C0 or DEL). */
bool schema_has_ctl(const char *s);
/* Names of Consul services and tags in list l (field of n): non-empty, no control characters.
 * 0, or -1 after cfg_derr(). */
int schema_check_names(dctx_t *c, const ynode_t *n, const char *field, const strs_t *l);

/* A resource reference {name, namespace} (schema.c). */
extern const msgdesc_t schema_ref_desc;
/* Descriptors defined in schema-upstream.c and used by schema.c (Upstream kind, Settings). */
extern const msgdesc_t schema_us_desc;
extern const msgdesc_t schema_cbcfg_desc;

#endif
