/*
 * streamkeeper: what a state-store backend needs beyond sk-store.h. Private to failover/:
 * results with no natural GTask type are boxed here so every backend boxes them alike.
 */
#pragma once

#include "failover/sk-store.h"

G_BEGIN_DECLS

/* For last_seq and claim_room. */
void sk_store_task_return_u64 (GTask *task, guint64 value);

/* For get_placement: @node NULL and @epoch 0 for a room never placed. */
void sk_store_task_return_placement (GTask *task, const char *node, guint64 incarnation,
                                     guint64 epoch);

SkStorePlacement *sk_store_placement_new (const char *room, const char *node, guint64 incarnation,
                                          guint64 epoch);
SkStoreNode *sk_store_node_new (const char *node, guint64 incarnation, const char *info);

/* "redis://HOST:PORT[/DB]" or "sentinel://HOST:PORT[,HOST:PORT…]/MASTER"; connects in the
 * background (see sk-store-redis.c). SK_ERROR_INVALID for a malformed URI. */
SkStore *sk_store_redis_new (const char *uri, GError **error);

G_END_DECLS
