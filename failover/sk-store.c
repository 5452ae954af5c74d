/*
 * streamkeeper: the state store front end. Picks a backend from a URI and wraps every
 * operation in a GTask, so callers see one GAsyncResult API whatever the backend does.
 */
#include "failover/sk-store.h"
#include "failover/sk-store-backend.h"

#include "common/sk-common.h"

void
sk_store_event_free (SkStoreEvent *event)
{
  if (event == NULL)
    return;
  g_free (event->json);
  g_free (event);
}

SkStore *
sk_store_new (const char *uri, GError **error)
{
  g_return_val_if_fail (uri != NULL, NULL);

  if (g_strcmp0 (uri, "memory") == 0)
    return sk_store_memory_new ();

  if (g_str_has_prefix (uri, "redis://") || g_str_has_prefix (uri, "sentinel://"))
    return sk_store_redis_new (uri, error);

  g_set_error (error, SK_ERROR, SK_ERROR_INVALID,
               "unknown store \"%s\" (expected memory, redis://HOST:PORT or "
               "sentinel://HOST:PORT[,HOST:PORT...]/MASTER)",
               uri);
  return NULL;
}

void
sk_store_free (SkStore *store)
{
  if (store == NULL)
    return;
  /* The backend owns the allocation that embeds @store; the URI is common. */
  g_clear_pointer (&store->uri, g_free);
  store->vtable->free (store);
}

static GTask *
store_task_new (GCancellable *cancellable, GAsyncReadyCallback callback, gpointer user_data,
                gpointer tag)
{
  GTask *task = g_task_new (NULL, cancellable, callback, user_data);

  g_task_set_source_tag (task, tag);
  return task;
}

static gboolean
store_result_is_valid (GAsyncResult *result, gpointer tag)
{
  return g_task_is_valid (result, NULL) && g_async_result_is_tagged (result, tag);
}

void
sk_store_append_event_async (SkStore *store, const char *room, guint64 epoch, guint64 seq,
                             const char *json, GCancellable *cancellable,
                             GAsyncReadyCallback callback, gpointer user_data)
{
  GTask *task = store_task_new (cancellable, callback, user_data, sk_store_append_event_async);

  store->vtable->append_event (store, room, epoch, seq, json, task);
}

gboolean
sk_store_append_event_finish (SkStore *store, GAsyncResult *result, GError **error)
{
  g_return_val_if_fail (store_result_is_valid (result, sk_store_append_event_async), FALSE);
  return g_task_propagate_boolean (G_TASK (result), error);
}

void
sk_store_read_events_async (SkStore *store, const char *room, guint64 after_seq, guint limit,
                            GCancellable *cancellable, GAsyncReadyCallback callback,
                            gpointer user_data)
{
  GTask *task = store_task_new (cancellable, callback, user_data, sk_store_read_events_async);

  store->vtable->read_events (store, room, after_seq, limit, task);
}

GPtrArray *
sk_store_read_events_finish (SkStore *store, GAsyncResult *result, GError **error)
{
  g_return_val_if_fail (store_result_is_valid (result, sk_store_read_events_async), NULL);
  return g_task_propagate_pointer (G_TASK (result), error);
}

void
sk_store_last_seq_async (SkStore *store, const char *room, GCancellable *cancellable,
                         GAsyncReadyCallback callback, gpointer user_data)
{
  GTask *task = store_task_new (cancellable, callback, user_data, sk_store_last_seq_async);

  store->vtable->last_seq (store, room, task);
}

/* 64-bit results travel as a boxed guint64: gssize is not guaranteed to hold them. */
static gboolean
store_propagate_u64 (GAsyncResult *result, guint64 *out, GError **error)
{
  g_autofree guint64 *value = g_task_propagate_pointer (G_TASK (result), error);

  if (value == NULL)
    return FALSE;
  if (out != NULL)
    *out = *value;
  return TRUE;
}

gboolean
sk_store_last_seq_finish (SkStore *store, GAsyncResult *result, guint64 *out_seq, GError **error)
{
  g_return_val_if_fail (store_result_is_valid (result, sk_store_last_seq_async), FALSE);
  return store_propagate_u64 (result, out_seq, error);
}

guint
sk_store_watch_events (SkStore *store, const char *room, SkStoreWatchFunc func, gpointer user_data,
                       GDestroyNotify destroy)
{
  g_return_val_if_fail (store != NULL && room != NULL && func != NULL, 0);
  return store->vtable->watch_events (store, room, func, user_data, destroy);
}

void
sk_store_unwatch_events (SkStore *store, guint watch_id)
{
  if (watch_id != 0)
    store->vtable->unwatch_events (store, watch_id);
}

void
sk_store_put_async (SkStore *store, const char *ns, const char *key, const char *value,
                    GCancellable *cancellable, GAsyncReadyCallback callback, gpointer user_data)
{
  GTask *task = store_task_new (cancellable, callback, user_data, sk_store_put_async);

  store->vtable->put (store, ns, key, value, task);
}

gboolean
sk_store_put_finish (SkStore *store, GAsyncResult *result, GError **error)
{
  g_return_val_if_fail (store_result_is_valid (result, sk_store_put_async), FALSE);
  return g_task_propagate_boolean (G_TASK (result), error);
}

void
sk_store_get_async (SkStore *store, const char *ns, const char *key, GCancellable *cancellable,
                    GAsyncReadyCallback callback, gpointer user_data)
{
  GTask *task = store_task_new (cancellable, callback, user_data, sk_store_get_async);

  store->vtable->get (store, ns, key, task);
}

char *
sk_store_get_finish (SkStore *store, GAsyncResult *result, GError **error)
{
  g_return_val_if_fail (store_result_is_valid (result, sk_store_get_async), NULL);
  return g_task_propagate_pointer (G_TASK (result), error);
}

void
sk_store_remove_async (SkStore *store, const char *ns, const char *key, GCancellable *cancellable,
                       GAsyncReadyCallback callback, gpointer user_data)
{
  GTask *task = store_task_new (cancellable, callback, user_data, sk_store_remove_async);

  store->vtable->remove (store, ns, key, task);
}

gboolean
sk_store_remove_finish (SkStore *store, GAsyncResult *result, GError **error)
{
  g_return_val_if_fail (store_result_is_valid (result, sk_store_remove_async), FALSE);
  return g_task_propagate_boolean (G_TASK (result), error);
}

void
sk_store_list_async (SkStore *store, const char *ns, GCancellable *cancellable,
                     GAsyncReadyCallback callback, gpointer user_data)
{
  GTask *task = store_task_new (cancellable, callback, user_data, sk_store_list_async);

  store->vtable->list (store, ns, task);
}

GPtrArray *
sk_store_list_finish (SkStore *store, GAsyncResult *result, GError **error)
{
  g_return_val_if_fail (store_result_is_valid (result, sk_store_list_async), NULL);
  return g_task_propagate_pointer (G_TASK (result), error);
}

void
sk_store_claim_room_async (SkStore *store, const char *room, const char *node, guint64 incarnation,
                           guint64 expected_epoch, GCancellable *cancellable,
                           GAsyncReadyCallback callback, gpointer user_data)
{
  GTask *task = store_task_new (cancellable, callback, user_data, sk_store_claim_room_async);

  store->vtable->claim_room (store, room, node, incarnation, expected_epoch, task);
}

gboolean
sk_store_claim_room_finish (SkStore *store, GAsyncResult *result, guint64 *out_epoch,
                            GError **error)
{
  g_return_val_if_fail (store_result_is_valid (result, sk_store_claim_room_async), FALSE);
  return store_propagate_u64 (result, out_epoch, error);
}

SkStorePlacement *
sk_store_placement_new (const char *room, const char *node, guint64 incarnation, guint64 epoch)
{
  SkStorePlacement *placement = g_new0 (SkStorePlacement, 1);

  placement->room = g_strdup (room);
  placement->node = g_strdup (node);
  placement->incarnation = incarnation;
  placement->epoch = epoch;
  return placement;
}

void
sk_store_placement_free (SkStorePlacement *placement)
{
  if (placement == NULL)
    return;
  g_free (placement->room);
  g_free (placement->node);
  g_free (placement);
}

void
sk_store_get_placement_async (SkStore *store, const char *room, GCancellable *cancellable,
                              GAsyncReadyCallback callback, gpointer user_data)
{
  GTask *task = store_task_new (cancellable, callback, user_data, sk_store_get_placement_async);

  store->vtable->get_placement (store, room, task);
}

gboolean
sk_store_get_placement_finish (SkStore *store, GAsyncResult *result, char **out_node,
                               guint64 *out_incarnation, guint64 *out_epoch, GError **error)
{
  g_return_val_if_fail (store_result_is_valid (result, sk_store_get_placement_async), FALSE);

  g_autoptr (SkStorePlacement) placement = g_task_propagate_pointer (G_TASK (result), error);
  if (placement == NULL)
    return FALSE;
  if (out_node != NULL)
    *out_node = g_steal_pointer (&placement->node);
  if (out_incarnation != NULL)
    *out_incarnation = placement->incarnation;
  if (out_epoch != NULL)
    *out_epoch = placement->epoch;
  return TRUE;
}

void
sk_store_task_return_u64 (GTask *task, guint64 value)
{
  g_task_return_pointer (task, g_memdup2 (&value, sizeof value), g_free);
}

void
sk_store_task_return_placement (GTask *task, const char *node, guint64 incarnation, guint64 epoch)
{
  g_task_return_pointer (task, sk_store_placement_new (NULL, node, incarnation, epoch),
                         (GDestroyNotify)sk_store_placement_free);
}

void
sk_store_release_room_async (SkStore *store, const char *room, guint64 epoch,
                             GCancellable *cancellable, GAsyncReadyCallback callback,
                             gpointer user_data)
{
  GTask *task = store_task_new (cancellable, callback, user_data, sk_store_release_room_async);

  store->vtable->release_room (store, room, epoch, task);
}

gboolean
sk_store_release_room_finish (SkStore *store, GAsyncResult *result, GError **error)
{
  g_return_val_if_fail (store_result_is_valid (result, sk_store_release_room_async), FALSE);
  return g_task_propagate_boolean (G_TASK (result), error);
}

void
sk_store_list_placements_async (SkStore *store, GCancellable *cancellable,
                                GAsyncReadyCallback callback, gpointer user_data)
{
  GTask *task = store_task_new (cancellable, callback, user_data, sk_store_list_placements_async);

  store->vtable->list_placements (store, task);
}

GPtrArray *
sk_store_list_placements_finish (SkStore *store, GAsyncResult *result, GError **error)
{
  g_return_val_if_fail (store_result_is_valid (result, sk_store_list_placements_async), NULL);
  return g_task_propagate_pointer (G_TASK (result), error);
}

/* ---- membership ------------------------------------------------------------------------- */

SkStoreNode *
sk_store_node_new (const char *node, guint64 incarnation, const char *info)
{
  SkStoreNode *n = g_new0 (SkStoreNode, 1);

  n->node = g_strdup (node);
  n->incarnation = incarnation;
  n->info = g_strdup (info);
  return n;
}

void
sk_store_node_free (SkStoreNode *node)
{
  if (node == NULL)
    return;
  g_free (node->node);
  g_free (node->info);
  g_free (node);
}

void
sk_store_join_node_async (SkStore *store, const char *node, const char *info, guint ttl_ms,
                          GCancellable *cancellable, GAsyncReadyCallback callback,
                          gpointer user_data)
{
  GTask *task = store_task_new (cancellable, callback, user_data, sk_store_join_node_async);

  store->vtable->join_node (store, node, info, ttl_ms, task);
}

gboolean
sk_store_join_node_finish (SkStore *store, GAsyncResult *result, guint64 *out_incarnation,
                           GError **error)
{
  g_return_val_if_fail (store_result_is_valid (result, sk_store_join_node_async), FALSE);
  return store_propagate_u64 (result, out_incarnation, error);
}

void
sk_store_renew_node_async (SkStore *store, const char *node, guint64 incarnation, const char *info,
                           guint ttl_ms, GCancellable *cancellable, GAsyncReadyCallback callback,
                           gpointer user_data)
{
  GTask *task = store_task_new (cancellable, callback, user_data, sk_store_renew_node_async);

  store->vtable->renew_node (store, node, incarnation, info, ttl_ms, task);
}

gboolean
sk_store_renew_node_finish (SkStore *store, GAsyncResult *result, GError **error)
{
  g_return_val_if_fail (store_result_is_valid (result, sk_store_renew_node_async), FALSE);
  return g_task_propagate_boolean (G_TASK (result), error);
}

void
sk_store_retire_node_async (SkStore *store, const char *node, guint64 incarnation, gboolean force,
                            GCancellable *cancellable, GAsyncReadyCallback callback,
                            gpointer user_data)
{
  GTask *task = store_task_new (cancellable, callback, user_data, sk_store_retire_node_async);

  store->vtable->retire_node (store, node, incarnation, force, task);
}

gboolean
sk_store_retire_node_finish (SkStore *store, GAsyncResult *result, GError **error)
{
  g_return_val_if_fail (store_result_is_valid (result, sk_store_retire_node_async), FALSE);
  return g_task_propagate_boolean (G_TASK (result), error);
}

void
sk_store_list_nodes_async (SkStore *store, GCancellable *cancellable, GAsyncReadyCallback callback,
                           gpointer user_data)
{
  GTask *task = store_task_new (cancellable, callback, user_data, sk_store_list_nodes_async);

  store->vtable->list_nodes (store, task);
}

GPtrArray *
sk_store_list_nodes_finish (SkStore *store, GAsyncResult *result, GError **error)
{
  g_return_val_if_fail (store_result_is_valid (result, sk_store_list_nodes_async), NULL);
  return g_task_propagate_pointer (G_TASK (result), error);
}
