/*
 * streamkeeper: the watchers of room logs, shared by the state-store backends.
 */
#include "failover/sk-store-watches.h"

typedef struct {
  guint id;
  char *room;
  SkStoreWatchFunc func;
  gpointer user_data;
  GDestroyNotify destroy;
} Watch;

struct _SkStoreWatches {
  GMainContext *context;
  const char *source_name;
  GHashTable *by_id;   /* id → Watch */
  GHashTable *by_room; /* room → GArray of ids */
  guint next_id;
  GHashTable *owed; /* room → guint64* newest seq its watchers have not heard of */
  GSource *notify_source;
};

static void
watch_free (gpointer data)
{
  Watch *watch = data;

  if (watch->destroy != NULL)
    watch->destroy (watch->user_data);
  g_free (watch->room);
  g_free (watch);
}

static GHashTable *
owed_table_new (void)
{
  return g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
}

SkStoreWatches *
sk_store_watches_new (GMainContext *context, const char *source_name)
{
  SkStoreWatches *self = g_new0 (SkStoreWatches, 1);

  self->context = context != NULL ? g_main_context_ref (context) : NULL;
  self->source_name = source_name;
  self->by_id = g_hash_table_new_full (NULL, NULL, NULL, watch_free);
  self->by_room
      = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, (GDestroyNotify)g_array_unref);
  self->owed = owed_table_new ();
  return self;
}

void
sk_store_watches_free (SkStoreWatches *self)
{
  if (self->notify_source != NULL) {
    /* Destroyed first: a notification in progress sees it and stops. */
    g_source_destroy (self->notify_source);
    g_source_unref (self->notify_source);
  }
  g_hash_table_unref (self->by_room);
  g_hash_table_unref (self->by_id);
  g_hash_table_unref (self->owed);
  if (self->context != NULL)
    g_main_context_unref (self->context);
  g_free (self);
}

guint
sk_store_watches_add (SkStoreWatches *self, const char *room, SkStoreWatchFunc func,
                      gpointer user_data, GDestroyNotify destroy)
{
  Watch *watch = g_new0 (Watch, 1);
  GArray *ids = g_hash_table_lookup (self->by_room, room);

  watch->id = ++self->next_id;
  watch->room = g_strdup (room);
  watch->func = func;
  watch->user_data = user_data;
  watch->destroy = destroy;
  g_hash_table_insert (self->by_id, GUINT_TO_POINTER (watch->id), watch);
  if (ids == NULL) {
    ids = g_array_new (FALSE, FALSE, sizeof (guint));
    g_hash_table_insert (self->by_room, g_strdup (room), ids);
  }
  g_array_append_val (ids, watch->id);
  return watch->id;
}

void
sk_store_watches_remove (SkStoreWatches *self, guint id)
{
  Watch *watch = g_hash_table_lookup (self->by_id, GUINT_TO_POINTER (id));
  GArray *ids;

  if (watch == NULL)
    return;
  ids = g_hash_table_lookup (self->by_room, watch->room);
  for (guint i = 0; ids != NULL && i < ids->len; i++) {
    if (g_array_index (ids, guint, i) == id) {
      g_array_remove_index (ids, i);
      break;
    }
  }
  if (ids != NULL && ids->len == 0)
    g_hash_table_remove (self->by_room, watch->room);
  /* Frees @watch and runs its destroy notify last, once the tables are consistent. */
  g_hash_table_remove (self->by_id, GUINT_TO_POINTER (id));
}

gboolean
sk_store_watches_has_room (SkStoreWatches *self, const char *room)
{
  return g_hash_table_contains (self->by_room, room);
}

GPtrArray *
sk_store_watches_get_rooms (SkStoreWatches *self)
{
  g_autofree gpointer *keys = g_hash_table_get_keys_as_array (self->by_room, NULL);
  GPtrArray *rooms = g_ptr_array_new ();

  for (gpointer *k = keys; *k != NULL; k++)
    g_ptr_array_add (rooms, *k);
  return rooms;
}

static gboolean
notify_cb (gpointer user_data)
{
  SkStoreWatches *self = user_data;
  GSource *source = g_main_current_source ();
  g_autoptr (GHashTable) owed = g_steal_pointer (&self->owed);
  GHashTableIter iter;
  const char *room;
  guint64 *seq;

  self->owed = owed_table_new ();
  g_clear_pointer (&self->notify_source, g_source_unref);

  g_hash_table_iter_init (&iter, owed);
  while (g_hash_table_iter_next (&iter, (gpointer *)&room, (gpointer *)&seq)) {
    GArray *ids = g_hash_table_lookup (self->by_room, room);
    g_autoptr (GArray) snapshot = NULL;

    if (ids == NULL)
      continue;
    /* Callbacks may add or remove watches, or free the store: walk a copy, re-check. */
    snapshot = g_array_copy (ids);
    for (guint i = 0; i < snapshot->len; i++) {
      Watch *watch = g_hash_table_lookup (self->by_id,
                                          GUINT_TO_POINTER (g_array_index (snapshot, guint, i)));

      if (watch == NULL)
        continue;
      watch->func (room, *seq, watch->user_data);
      if (g_source_is_destroyed (source))
        return G_SOURCE_REMOVE; /* @self was freed */
    }
  }
  return G_SOURCE_REMOVE;
}

void
sk_store_watches_notify (SkStoreWatches *self, const char *room, guint64 seq)
{
  guint64 *owed;

  if (!g_hash_table_contains (self->by_room, room))
    return;
  owed = g_hash_table_lookup (self->owed, room);
  if (owed == NULL) {
    owed = g_new0 (guint64, 1);
    g_hash_table_insert (self->owed, g_strdup (room), owed);
  }
  *owed = MAX (*owed, seq);
  if (self->notify_source != NULL)
    return;
  self->notify_source = g_idle_source_new ();
  g_source_set_priority (self->notify_source, G_PRIORITY_DEFAULT);
  g_source_set_callback (self->notify_source, notify_cb, self, NULL);
  g_source_set_static_name (self->notify_source, self->source_name);
  g_source_attach (self->notify_source,
                   self->context != NULL ? self->context : g_main_context_get_thread_default ());
}
