/*
 * streamkeeper: the embedded memory store, for a single node.
 *
 * Every operation takes effect when it is called (so calls are applied in call order, as a
 * pipelined Redis connection would) and completes through its GTask, which GLib defers to
 * an idle: callers never see their callback re-entered from inside their own call. Watches
 * are notified from one coalescing idle for the same reason.
 *
 * Memory is bounded per room: a room's log keeps only its newest SK_STORE_MEMORY_LOG_CAP
 * events in a ring. A read that starts before that window gets what is left (its first
 * event's seq is then more than after_seq + 1, which the SSE layer reports to the client).
 */
#include "failover/sk-store.h"
#include "failover/sk-store-backend.h"
#include "failover/sk-store-watches.h"

#include "common/sk-common.h"

#define SK_STORE_MEMORY_LOG_CAP 10000

typedef struct {
  GPtrArray *log; /* SkStoreEvent*, a ring once it holds SK_STORE_MEMORY_LOG_CAP */
  guint head;     /* index of the oldest event once the ring is full */
  guint64 last_seq;
  char *node; /* placement; NULL while unplaced */
  guint64 incarnation;
  guint64 epoch;
} MemoryRoom;

/* A node id's membership: the incarnation counter outlives the leases. */
typedef struct {
  guint64 incarnation;
  gint64 expires_us; /* monotonic; 0 = no lease */
  char *info;
} MemoryNode;

typedef struct {
  SkStore parent;

  GHashTable *rooms;      /* name → MemoryRoom */
  GHashTable *namespaces; /* ns → (key → value) */
  SkStoreWatches *watches;

  GHashTable *nodes; /* id → MemoryNode */
} SkStoreMemory;

static void
memory_room_free (gpointer data)
{
  MemoryRoom *room = data;

  g_ptr_array_unref (room->log);
  g_free (room->node);
  g_free (room);
}

static void
memory_node_free (gpointer data)
{
  MemoryNode *node = data;

  g_free (node->info);
  g_free (node);
}

static MemoryRoom *
memory_lookup_room (SkStoreMemory *self, const char *name, gboolean create)
{
  MemoryRoom *room = g_hash_table_lookup (self->rooms, name);

  if (room == NULL && create) {
    room = g_new0 (MemoryRoom, 1);
    room->log = g_ptr_array_new_with_free_func ((GDestroyNotify)sk_store_event_free);
    g_hash_table_insert (self->rooms, g_strdup (name), room);
  }
  return room;
}

/* The @i-th oldest event still kept. */
static SkStoreEvent *
memory_room_nth (MemoryRoom *room, guint i)
{
  return g_ptr_array_index (room->log, (room->head + i) % room->log->len);
}

static void
memory_room_push (MemoryRoom *room, SkStoreEvent *event)
{
  if (room->log->len < SK_STORE_MEMORY_LOG_CAP) {
    g_ptr_array_add (room->log, event);
    return;
  }
  /* Full: overwrite the oldest. */
  sk_store_event_free (g_ptr_array_index (room->log, room->head));
  g_ptr_array_index (room->log, room->head) = event;
  room->head = (room->head + 1) % room->log->len;
}

static void
memory_append_event (SkStore *store, const char *name, guint64 epoch, guint64 seq, const char *json,
                     GTask *task)
{
  SkStoreMemory *self = (SkStoreMemory *)store;
  MemoryRoom *room = memory_lookup_room (self, name, TRUE);
  SkStoreEvent *event;

  if (epoch < room->epoch) {
    g_task_return_new_error (task, SK_ERROR, SK_ERROR_STALE_EPOCH,
                             "room %s: epoch %" G_GUINT64_FORMAT
                             " is older than %" G_GUINT64_FORMAT,
                             name, epoch, room->epoch);
  } else if (seq != room->last_seq + 1) {
    g_task_return_new_error (task, SK_ERROR, SK_ERROR_CONFLICT,
                             "room %s: seq %" G_GUINT64_FORMAT ", expected %" G_GUINT64_FORMAT,
                             name, seq, room->last_seq + 1);
  } else {
    event = g_new0 (SkStoreEvent, 1);
    event->seq = seq;
    event->json = g_strdup (json);
    memory_room_push (room, event);
    room->last_seq = seq;
    sk_store_watches_notify (self->watches, name, room->last_seq);
    g_task_return_boolean (task, TRUE);
  }
  g_object_unref (task);
}

static void
memory_read_events (SkStore *store, const char *name, guint64 after_seq, guint limit, GTask *task)
{
  SkStoreMemory *self = (SkStoreMemory *)store;
  MemoryRoom *room = memory_lookup_room (self, name, FALSE);
  GPtrArray *events = g_ptr_array_new_with_free_func ((GDestroyNotify)sk_store_event_free);

  if (room != NULL && after_seq < room->last_seq && room->log->len > 0) {
    guint64 first_seq = room->last_seq - room->log->len + 1;
    guint start = after_seq < first_seq ? 0 : (guint)(after_seq - first_seq + 1);

    for (guint i = start; i < room->log->len && events->len < limit; i++) {
      SkStoreEvent *src = memory_room_nth (room, i);
      SkStoreEvent *copy = g_new0 (SkStoreEvent, 1);

      copy->seq = src->seq;
      copy->json = g_strdup (src->json);
      g_ptr_array_add (events, copy);
    }
  }
  g_task_return_pointer (task, events, (GDestroyNotify)g_ptr_array_unref);
  g_object_unref (task);
}

static void
memory_last_seq (SkStore *store, const char *name, GTask *task)
{
  MemoryRoom *room = memory_lookup_room ((SkStoreMemory *)store, name, FALSE);

  sk_store_task_return_u64 (task, room != NULL ? room->last_seq : 0);
  g_object_unref (task);
}

static guint
memory_watch_events (SkStore *store, const char *name, SkStoreWatchFunc func, gpointer user_data,
                     GDestroyNotify destroy)
{
  return sk_store_watches_add (((SkStoreMemory *)store)->watches, name, func, user_data, destroy);
}

static void
memory_unwatch_events (SkStore *store, guint watch_id)
{
  sk_store_watches_remove (((SkStoreMemory *)store)->watches, watch_id);
}

static GHashTable *
memory_namespace (SkStoreMemory *self, const char *ns, gboolean create)
{
  GHashTable *table = g_hash_table_lookup (self->namespaces, ns);

  if (table == NULL && create) {
    table = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
    g_hash_table_insert (self->namespaces, g_strdup (ns), table);
  }
  return table;
}

static void
memory_put (SkStore *store, const char *ns, const char *key, const char *value, GTask *task)
{
  GHashTable *table = memory_namespace ((SkStoreMemory *)store, ns, TRUE);

  g_hash_table_insert (table, g_strdup (key), g_strdup (value));
  g_task_return_boolean (task, TRUE);
  g_object_unref (task);
}

static void
memory_get (SkStore *store, const char *ns, const char *key, GTask *task)
{
  GHashTable *table = memory_namespace ((SkStoreMemory *)store, ns, FALSE);
  const char *value = table != NULL ? g_hash_table_lookup (table, key) : NULL;

  if (value != NULL)
    g_task_return_pointer (task, g_strdup (value), g_free);
  else
    g_task_return_new_error (task, SK_ERROR, SK_ERROR_NOT_FOUND, "%s/%s: not found", ns, key);
  g_object_unref (task);
}

static void
memory_remove (SkStore *store, const char *ns, const char *key, GTask *task)
{
  GHashTable *table = memory_namespace ((SkStoreMemory *)store, ns, FALSE);

  /* Removing what is not there succeeds: removal is idempotent, as in Redis. */
  if (table != NULL)
    g_hash_table_remove (table, key);
  g_task_return_boolean (task, TRUE);
  g_object_unref (task);
}

static void
memory_list (SkStore *store, const char *ns, GTask *task)
{
  GHashTable *table = memory_namespace ((SkStoreMemory *)store, ns, FALSE);
  GPtrArray *values = g_ptr_array_new_with_free_func (g_free);

  if (table != NULL) {
    g_autoptr (GList) keys = g_hash_table_get_keys (table);

    /* Key order, so listings are stable from call to call. */
    keys = g_list_sort (keys, (GCompareFunc)g_strcmp0);
    for (GList *l = keys; l != NULL; l = l->next)
      g_ptr_array_add (values, g_strdup (g_hash_table_lookup (table, l->data)));
  }
  g_task_return_pointer (task, values, (GDestroyNotify)g_ptr_array_unref);
  g_object_unref (task);
}

static void
memory_claim_room (SkStore *store, const char *name, const char *node, guint64 incarnation,
                   guint64 expected_epoch, GTask *task)
{
  MemoryRoom *room = memory_lookup_room ((SkStoreMemory *)store, name, TRUE);

  if (room->epoch != expected_epoch) {
    g_task_return_new_error (task, SK_ERROR, SK_ERROR_CONFLICT,
                             "room %s: epoch is %" G_GUINT64_FORMAT ", not %" G_GUINT64_FORMAT,
                             name, room->epoch, expected_epoch);
  } else {
    room->epoch = expected_epoch + 1;
    g_free (room->node);
    room->node = g_strdup (node);
    room->incarnation = incarnation;
    sk_store_task_return_u64 (task, room->epoch);
  }
  g_object_unref (task);
}

static void
memory_get_placement (SkStore *store, const char *name, GTask *task)
{
  MemoryRoom *room = memory_lookup_room ((SkStoreMemory *)store, name, FALSE);

  if (room != NULL)
    sk_store_task_return_placement (task, room->node, room->incarnation, room->epoch);
  else
    sk_store_task_return_placement (task, NULL, 0, 0);
  g_object_unref (task);
}

static void
memory_release_room (SkStore *store, const char *name, guint64 epoch, GTask *task)
{
  MemoryRoom *room = memory_lookup_room ((SkStoreMemory *)store, name, FALSE);

  if (room == NULL || room->epoch != epoch) {
    g_task_return_new_error (task, SK_ERROR, SK_ERROR_CONFLICT,
                             "room %s: epoch is %" G_GUINT64_FORMAT ", not %" G_GUINT64_FORMAT,
                             name, room != NULL ? room->epoch : 0, epoch);
  } else {
    g_clear_pointer (&room->node, g_free);
    room->incarnation = 0;
    g_task_return_boolean (task, TRUE);
  }
  g_object_unref (task);
}

static void
memory_list_placements (SkStore *store, GTask *task)
{
  SkStoreMemory *self = (SkStoreMemory *)store;
  GPtrArray *placements = g_ptr_array_new_with_free_func ((GDestroyNotify)sk_store_placement_free);
  g_autoptr (GList) names
      = g_list_sort (g_hash_table_get_keys (self->rooms), (GCompareFunc)g_strcmp0);

  for (GList *l = names; l != NULL; l = l->next) {
    MemoryRoom *room = g_hash_table_lookup (self->rooms, l->data);

    if (room->node != NULL)
      g_ptr_array_add (
          placements, sk_store_placement_new (l->data, room->node, room->incarnation, room->epoch));
  }
  g_task_return_pointer (task, placements, (GDestroyNotify)g_ptr_array_unref);
  g_object_unref (task);
}

/* ---- membership ------------------------------------------------------------------------- */

static MemoryNode *
memory_lookup_node (SkStoreMemory *self, const char *id, gboolean create)
{
  MemoryNode *node = g_hash_table_lookup (self->nodes, id);

  if (node == NULL && create) {
    node = g_new0 (MemoryNode, 1);
    g_hash_table_insert (self->nodes, g_strdup (id), node);
  }
  if (node != NULL && node->expires_us != 0 && node->expires_us <= g_get_monotonic_time ())
    node->expires_us = 0;
  return node;
}

static void
memory_set_lease (MemoryNode *node, const char *info, guint ttl_ms)
{
  g_free (node->info);
  node->info = g_strdup (info);
  node->expires_us = g_get_monotonic_time () + (gint64)ttl_ms * 1000;
}

static void
memory_join_node (SkStore *store, const char *id, const char *info, guint ttl_ms, GTask *task)
{
  MemoryNode *node = memory_lookup_node ((SkStoreMemory *)store, id, TRUE);

  node->incarnation++;
  memory_set_lease (node, info, ttl_ms);
  sk_store_task_return_u64 (task, node->incarnation);
  g_object_unref (task);
}

static void
memory_renew_node (SkStore *store, const char *id, guint64 incarnation, const char *info,
                   guint ttl_ms, GTask *task)
{
  MemoryNode *node = memory_lookup_node ((SkStoreMemory *)store, id, FALSE);

  if (node == NULL || node->incarnation != incarnation) {
    g_task_return_new_error (task, SK_ERROR, SK_ERROR_STALE_EPOCH,
                             "node %s: incarnation %" G_GUINT64_FORMAT " was retired", id,
                             incarnation);
  } else {
    memory_set_lease (node, info, ttl_ms);
    g_task_return_boolean (task, TRUE);
  }
  g_object_unref (task);
}

static void
memory_retire_node (SkStore *store, const char *id, guint64 incarnation, gboolean force,
                    GTask *task)
{
  MemoryNode *node = memory_lookup_node ((SkStoreMemory *)store, id, FALSE);

  if (node == NULL || node->incarnation > incarnation) {
    g_task_return_boolean (task, TRUE);
  } else if (node->expires_us != 0 && !force) {
    g_task_return_new_error (task, SK_ERROR, SK_ERROR_CONFLICT,
                             "node %s: incarnation %" G_GUINT64_FORMAT " still holds its lease", id,
                             incarnation);
  } else {
    node->incarnation = MAX (node->incarnation, incarnation) + 1;
    node->expires_us = 0;
    g_task_return_boolean (task, TRUE);
  }
  g_object_unref (task);
}

static void
memory_list_nodes (SkStore *store, GTask *task)
{
  SkStoreMemory *self = (SkStoreMemory *)store;
  GPtrArray *nodes = g_ptr_array_new_with_free_func ((GDestroyNotify)sk_store_node_free);
  g_autoptr (GList) ids
      = g_list_sort (g_hash_table_get_keys (self->nodes), (GCompareFunc)g_strcmp0);

  for (GList *l = ids; l != NULL; l = l->next) {
    MemoryNode *node = memory_lookup_node (self, l->data, FALSE);

    if (node->expires_us != 0)
      g_ptr_array_add (nodes, sk_store_node_new (l->data, node->incarnation, node->info));
  }
  g_task_return_pointer (task, nodes, (GDestroyNotify)g_ptr_array_unref);
  g_object_unref (task);
}

static void
memory_free (SkStore *store)
{
  SkStoreMemory *self = (SkStoreMemory *)store;

  sk_store_watches_free (self->watches);
  g_hash_table_unref (self->nodes);
  g_hash_table_unref (self->namespaces);
  g_hash_table_unref (self->rooms);
  g_free (self);
}

static const SkStoreVTable memory_vtable = {
  .free = memory_free,
  .append_event = memory_append_event,
  .read_events = memory_read_events,
  .last_seq = memory_last_seq,
  .watch_events = memory_watch_events,
  .unwatch_events = memory_unwatch_events,
  .put = memory_put,
  .get = memory_get,
  .remove = memory_remove,
  .list = memory_list,
  .claim_room = memory_claim_room,
  .get_placement = memory_get_placement,
  .release_room = memory_release_room,
  .list_placements = memory_list_placements,
  .join_node = memory_join_node,
  .renew_node = memory_renew_node,
  .retire_node = memory_retire_node,
  .list_nodes = memory_list_nodes,
};

SkStore *
sk_store_memory_new (void)
{
  SkStoreMemory *self = g_new0 (SkStoreMemory, 1);

  self->parent.vtable = &memory_vtable;
  self->parent.uri = g_strdup ("memory");
  self->rooms = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, memory_room_free);
  self->namespaces
      = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, (GDestroyNotify)g_hash_table_unref);
  self->watches = sk_store_watches_new (NULL, "sk-store-memory-notify");
  self->nodes = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, memory_node_free);
  return &self->parent;
}
