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

  if (g_str_has_prefix (uri, "redis://") || g_str_has_prefix (uri, "sentinel://")) {
    g_set_error (error, SK_ERROR, SK_ERROR_INVALID, "store backend \"%s\": not built yet", uri);
    return NULL;
  }

  g_set_error (error, SK_ERROR, SK_ERROR_INVALID,
               "unknown store \"%s\" (expected memory, redis://HOST:PORT or "
               "sentinel://HOST:PORT/MASTER)",
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
sk_store_claim_room_async (SkStore *store, const char *room, const char *node,
                           guint64 expected_epoch, GCancellable *cancellable,
                           GAsyncReadyCallback callback, gpointer user_data)
{
  GTask *task = store_task_new (cancellable, callback, user_data, sk_store_claim_room_async);

  store->vtable->claim_room (store, room, node, expected_epoch, task);
}

gboolean
sk_store_claim_room_finish (SkStore *store, GAsyncResult *result, guint64 *out_epoch,
                            GError **error)
{
  g_return_val_if_fail (store_result_is_valid (result, sk_store_claim_room_async), FALSE);
  return store_propagate_u64 (result, out_epoch, error);
}

/* The placement result: node may be NULL (never placed). */
typedef struct {
  char *node;
  guint64 epoch;
} SkStorePlacement;

static void
store_placement_free (gpointer data)
{
  SkStorePlacement *placement = data;

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
                               guint64 *out_epoch, GError **error)
{
  SkStorePlacement *placement;

  g_return_val_if_fail (store_result_is_valid (result, sk_store_get_placement_async), FALSE);
  placement = g_task_propagate_pointer (G_TASK (result), error);
  if (placement == NULL)
    return FALSE;
  if (out_node != NULL)
    *out_node = g_steal_pointer (&placement->node);
  if (out_epoch != NULL)
    *out_epoch = placement->epoch;
  store_placement_free (placement);
  return TRUE;
}

void
sk_store_task_return_u64 (GTask *task, guint64 value)
{
  g_task_return_pointer (task, g_memdup2 (&value, sizeof value), g_free);
}

void
sk_store_task_return_placement (GTask *task, const char *node, guint64 epoch)
{
  SkStorePlacement *placement = g_new0 (SkStorePlacement, 1);

  placement->node = g_strdup (node);
  placement->epoch = epoch;
  g_task_return_pointer (task, placement, store_placement_free);
}
