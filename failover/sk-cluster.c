/*
 * streamkeeper: cluster membership (see sk-cluster.h).
 *
 * One timer drives everything: every heartbeat the lease is renewed and the view (live nodes,
 * placements) refreshed, each as one store call at a time so a slow store is never flooded.
 * Renewals are timed from when they were sent, so a node's own idea of "my lease is valid"
 * never outlives what the store granted.
 */
#include "failover/sk-cluster.h"

#include <string.h>

#include "common/sk-common.h"
#include "common/sk-http.h"
#include "failover/sk-peers.h"

typedef struct {
  SkClusterCallbacks callbacks;
  gpointer user_data;
} Listener;

struct _SkCluster {
  const SkConfig *config;
  SkStore *store;
  GCancellable *cancellable;
  GArray *listeners; /* Listener */
  SkClusterInfoFunc info_func;
  gpointer info_data;

  SkClusterState state;
  guint64 incarnation;
  guint tick_id;
  gboolean renew_in_flight;
  gboolean view_in_flight;
  gboolean join_in_flight;
  gint64 last_renew_ok_us; /* send time of the last acknowledged renewal */
  gint64 grace_until_us;

  GHashTable *live;    /* node id → SkStoreNode*, as of the last view */
  GHashTable *dead;    /* node id → highest retired incarnation (guint64*) */
  GHashTable *watched; /* "node\nincarnation" → NULL: incarnations to retire once gone */
  GHashTable *retiring;
  gboolean view_again; /* a refresh was asked for while one was in flight */
  SkPeers *peers;      /* fast detection of dead node processes */
  GTask *leave_task;
  SoupSession *http; /* forwarding to other nodes; created on first use */
};

static void cluster_join (SkCluster *self);

static gint64
ms_to_us (guint ms)
{
  return (gint64)ms * 1000;
}

static char *
watch_key (const char *node, guint64 incarnation)
{
  return g_strdup_printf ("%s\n%" G_GUINT64_FORMAT, node, incarnation);
}

static void
cluster_set_state (SkCluster *self, SkClusterState state)
{
  if (self->state == state)
    return;
  g_message ("cluster: node %s incarnation %" G_GUINT64_FORMAT ": %s -> %s", self->config->node_id,
             self->incarnation, sk_cluster_state_to_string (self->state),
             sk_cluster_state_to_string (state));
  self->state = state;
}

static void
cluster_start_grace (SkCluster *self)
{
  /* Long enough for every node to renew at least once against the (new) store. */
  self->grace_until_us = g_get_monotonic_time () + ms_to_us (self->config->cluster_lease_ttl_ms)
                         + ms_to_us (self->config->cluster_heartbeat_ms);
}

static char *
cluster_info (SkCluster *self)
{
  g_autoptr (JsonNode) node = NULL;
  JsonObject *o;

  if (self->info_func != NULL)
    node = self->info_func (self->info_data);
  if (node == NULL || !JSON_NODE_HOLDS_OBJECT (node)) {
    g_clear_pointer (&node, json_node_unref);
    node = json_node_init_object (json_node_alloc (), json_object_new ());
    json_object_unref (json_node_get_object (node));
  }
  o = json_node_get_object (node);
  json_object_set_string_member (o, "url", self->config->cluster_advertise_url);
  return json_to_string (node, FALSE);
}

/* ---- fencing and rejoining -------------------------------------------------------------- */

static gboolean
rejoin_cb (gpointer user_data)
{
  SkCluster *self = user_data;

  cluster_join (self);
  return G_SOURCE_REMOVE;
}

static void
cluster_fence (SkCluster *self, const GError *error)
{
  g_warning ("cluster: node %s incarnation %" G_GUINT64_FORMAT
             " was declared dead (%s): fencing: rooms and ingress sessions here are dropped, "
             "then the node rejoins",
             self->config->node_id, self->incarnation, error->message);
  cluster_set_state (self, SK_CLUSTER_FENCED);
  sk_peers_clear (self->peers);
  for (guint i = 0; i < self->listeners->len; i++) {
    Listener *l = &g_array_index (self->listeners, Listener, i);

    if (l->callbacks.fenced != NULL)
      l->callbacks.fenced (self, l->user_data);
  }
  self->incarnation = 0;
  g_timeout_add (self->config->cluster_heartbeat_ms, rejoin_cb, self);
}

/* ---- the lease -------------------------------------------------------------------------- */

typedef struct {
  SkCluster *self;
  gint64 sent_us;
} RenewCall;

static gboolean
op_cancelled (GAsyncResult *result)
{
  GCancellable *cancellable = g_task_get_cancellable (G_TASK (result));

  return cancellable != NULL && g_cancellable_is_cancelled (cancellable);
}

static void
on_renewed (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autofree RenewCall *call = user_data;
  SkCluster *self = call->self;
  g_autoptr (GError) error = NULL;

  if (op_cancelled (result))
    return;
  self->renew_in_flight = FALSE;
  if (self->state == SK_CLUSTER_LEFT || self->state == SK_CLUSTER_FENCED)
    return;

  if (sk_store_renew_node_finish (self->store, result, &error)) {
    if (self->state == SK_CLUSTER_STORE_UNREACHABLE) {
      g_message ("cluster: the store answers again; nobody is declared dead for %u ms",
                 self->config->cluster_lease_ttl_ms + self->config->cluster_heartbeat_ms);
      cluster_start_grace (self);
    }
    self->last_renew_ok_us = call->sent_us;
    cluster_set_state (self, SK_CLUSTER_MEMBER);
    return;
  }
  if (g_error_matches (error, SK_ERROR, SK_ERROR_STALE_EPOCH)) {
    cluster_fence (self, error);
    return;
  }
  if (self->state == SK_CLUSTER_MEMBER
      && g_get_monotonic_time () - self->last_renew_ok_us
             > ms_to_us (self->config->cluster_lease_ttl_ms)) {
    g_warning ("cluster: lease not renewed for %u ms (%s); streams continue, new ones are "
               "refused until the store answers",
               self->config->cluster_lease_ttl_ms, error->message);
    cluster_set_state (self, SK_CLUSTER_STORE_UNREACHABLE);
  }
}

static void
cluster_renew (SkCluster *self)
{
  g_autofree char *info = NULL;
  RenewCall *call;

  if (self->renew_in_flight || self->incarnation == 0)
    return;
  call = g_new0 (RenewCall, 1);
  call->self = self;
  call->sent_us = g_get_monotonic_time ();
  info = cluster_info (self);
  self->renew_in_flight = TRUE;
  sk_store_renew_node_async (self->store, self->config->node_id, self->incarnation, info,
                             self->config->cluster_lease_ttl_ms, self->cancellable, on_renewed,
                             call);
}

/* ---- the view: who is alive, who must be retired ----------------------------------------- */

typedef struct {
  SkCluster *self;
  char *key;
  const char *why; /* static */
  gboolean fast;   /* from the peer watch: refresh the view at once */
} RetireCall;

static void cluster_refresh_view (SkCluster *self);

static void
on_retired (GObject *source, GAsyncResult *result, gpointer user_data)
{
  RetireCall *call = user_data;
  g_autofree char *key = call->key;
  SkCluster *self = call->self;
  g_autoptr (GError) error = NULL;
  g_autofree char *node = NULL;
  const char *nl;
  guint64 incarnation, *known;

  if (op_cancelled (result)) {
    g_free (call);
    return;
  }
  g_hash_table_remove (self->retiring, key);
  if (!sk_store_retire_node_finish (self->store, result, &error)) {
    if (call->fast)
      g_warning ("cluster: retiring %s failed: %s; its lease decides", key, error->message);
    else
      g_debug ("cluster: retiring %s: %s", key, error->message);
    g_free (call);
    return;
  }
  nl = strchr (key, '\n');
  node = g_strndup (key, nl - key);
  incarnation = g_ascii_strtoull (nl + 1, NULL, 10);
  known = g_hash_table_lookup (self->dead, node);
  if (known == NULL || *known < incarnation) {
    g_message ("cluster: node %s incarnation %" G_GUINT64_FORMAT " is dead (%s)", node, incarnation,
               call->why);
    g_hash_table_replace (self->dead, g_strdup (node),
                          g_memdup2 (&incarnation, sizeof incarnation));
  }
  g_hash_table_remove (self->watched, key);
  /* Survivors act on the next view: get it now rather than at the next heartbeat. */
  if (call->fast)
    cluster_refresh_view (self);
  g_free (call);
}

/* @fast: the peer watch saw its process gone; the lease it may still hold is dropped with
 * it (the store only retires that incarnation: a newer one of the same node is untouched). */
static void
cluster_retire (SkCluster *self, const char *key, gboolean fast)
{
  const char *nl = strchr (key, '\n');
  g_autofree char *node = g_strndup (key, nl - key);
  RetireCall *call;

  if (g_hash_table_contains (self->retiring, key))
    return;
  g_hash_table_add (self->retiring, g_strdup (key));
  call = g_new0 (RetireCall, 1);
  call->self = self;
  call->key = g_strdup (key);
  call->why = fast ? "its process is gone" : "its lease is gone";
  call->fast = fast;
  sk_store_retire_node_async (self->store, node, g_ascii_strtoull (nl + 1, NULL, 10), fast,
                              self->cancellable, on_retired, call);
}

/* The peer watch's verdict: nothing listens where @node's @incarnation did. */
static void
cluster_on_peer_dead (const char *node, guint64 incarnation, const char *reason, gpointer user_data)
{
  SkCluster *self = user_data;
  g_autofree char *key = watch_key (node, incarnation);
  guint64 *dead = g_hash_table_lookup (self->dead, node);

  if (dead != NULL && *dead >= incarnation)
    return; /* known already (e.g. it left cleanly) */
  if (self->state != SK_CLUSTER_MEMBER) {
    g_message ("cluster: node %s incarnation %" G_GUINT64_FORMAT
               ": %s; not acting on it while this node is %s (its lease decides)",
               node, incarnation, reason, sk_cluster_state_to_string (self->state));
    return;
  }
  g_message ("cluster: node %s incarnation %" G_GUINT64_FORMAT
             ": %s; retiring it now instead of waiting up to %u ms for its lease to expire",
             node, incarnation, reason, self->config->cluster_lease_ttl_ms);
  cluster_retire (self, key, TRUE);
}

static void
cluster_emit_view (SkCluster *self, GPtrArray *placements)
{
  for (guint i = 0; i < self->listeners->len; i++) {
    Listener *l = &g_array_index (self->listeners, Listener, i);

    if (l->callbacks.view != NULL)
      l->callbacks.view (self, placements, l->user_data);
  }
}

static void
cluster_process_view (SkCluster *self, GPtrArray *placements)
{
  GHashTableIter iter;
  gpointer key;

  /* Every incarnation we have seen alive, or that holds a room, is watched until dead. */
  g_hash_table_iter_init (&iter, self->live);
  while (g_hash_table_iter_next (&iter, NULL, &key)) {
    SkStoreNode *n = key;

    if (g_strcmp0 (n->node, self->config->node_id) != 0)
      g_hash_table_add (self->watched, watch_key (n->node, n->incarnation));
  }
  for (guint i = 0; i < placements->len; i++) {
    SkStorePlacement *p = g_ptr_array_index (placements, i);

    if (p->incarnation != 0)
      sk_cluster_get_liveness (self, p->node, p->incarnation); /* watches it if unknown */
  }

  if (!sk_cluster_in_grace (self) && self->state == SK_CLUSTER_MEMBER) {
    g_autoptr (GPtrArray) gone = g_ptr_array_new_with_free_func (g_free);

    g_hash_table_iter_init (&iter, self->watched);
    while (g_hash_table_iter_next (&iter, &key, NULL)) {
      const char *nl = strchr (key, '\n');
      g_autofree char *node = g_strndup (key, nl - (const char *)key);
      SkStoreNode *n = g_hash_table_lookup (self->live, node);

      if (n == NULL || n->incarnation != g_ascii_strtoull (nl + 1, NULL, 10))
        g_ptr_array_add (gone, g_strdup (key));
    }
    for (guint i = 0; i < gone->len; i++)
      cluster_retire (self, g_ptr_array_index (gone, i), FALSE);
  }
  cluster_emit_view (self, placements);
}

static void
on_placements (GObject *source, GAsyncResult *result, gpointer user_data)
{
  SkCluster *self = user_data;
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) placements = NULL;

  if (op_cancelled (result))
    return;
  self->view_in_flight = FALSE;
  placements = sk_store_list_placements_finish (self->store, result, &error);
  if (placements == NULL) {
    g_debug ("cluster: listing placements: %s", error->message);
    return;
  }
  if (self->state != SK_CLUSTER_LEFT)
    cluster_process_view (self, placements);
  if (self->view_again) {
    self->view_again = FALSE;
    cluster_refresh_view (self);
  }
}

/* Every other node with a lease is watched, under the incarnation that holds it. */
static void
cluster_sync_peers (SkCluster *self)
{
  GHashTableIter iter;
  gpointer value;

  if (self->state != SK_CLUSTER_MEMBER) {
    sk_peers_clear (self->peers);
    return;
  }
  sk_peers_begin_sync (self->peers);
  g_hash_table_iter_init (&iter, self->live);
  while (g_hash_table_iter_next (&iter, NULL, &value)) {
    SkStoreNode *n = value;

    if (g_strcmp0 (n->node, self->config->node_id) != 0)
      sk_peers_want (self->peers, n->node, n->incarnation, sk_cluster_get_node_url (self, n->node));
  }
  sk_peers_end_sync (self->peers);
}

static void
on_nodes (GObject *source, GAsyncResult *result, gpointer user_data)
{
  SkCluster *self = user_data;
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) nodes = NULL;

  if (op_cancelled (result))
    return;
  nodes = sk_store_list_nodes_finish (self->store, result, &error);
  if (nodes == NULL) {
    self->view_in_flight = FALSE;
    g_debug ("cluster: listing nodes: %s", error->message);
    return;
  }
  g_hash_table_remove_all (self->live);
  for (guint i = 0; i < nodes->len; i++) {
    SkStoreNode *n = g_ptr_array_steal_index (nodes, i--);

    g_hash_table_replace (self->live, n->node, n);
  }
  cluster_sync_peers (self);
  sk_store_list_placements_async (self->store, self->cancellable, on_placements, self);
}

static void
cluster_refresh_view (SkCluster *self)
{
  if (self->state != SK_CLUSTER_MEMBER && self->state != SK_CLUSTER_STORE_UNREACHABLE)
    return;
  if (self->view_in_flight) {
    self->view_again = TRUE;
    return;
  }
  self->view_in_flight = TRUE;
  sk_store_list_nodes_async (self->store, self->cancellable, on_nodes, self);
}

static gboolean
tick_cb (gpointer user_data)
{
  SkCluster *self = user_data;

  if (self->state == SK_CLUSTER_MEMBER || self->state == SK_CLUSTER_STORE_UNREACHABLE) {
    cluster_renew (self);
    cluster_refresh_view (self);
  }
  return G_SOURCE_CONTINUE;
}

/* ---- joining ---------------------------------------------------------------------------- */

static void
on_joined (GObject *source, GAsyncResult *result, gpointer user_data)
{
  SkCluster *self = user_data;
  g_autoptr (GError) error = NULL;
  guint64 incarnation = 0;

  if (op_cancelled (result))
    return;
  self->join_in_flight = FALSE;
  if (self->state == SK_CLUSTER_LEFT)
    return;
  if (!sk_store_join_node_finish (self->store, result, &incarnation, &error)) {
    g_warning ("cluster: node %s cannot join yet: %s; retrying", self->config->node_id,
               error->message);
    g_timeout_add (self->config->cluster_heartbeat_ms, rejoin_cb, self);
    return;
  }
  self->incarnation = incarnation;
  sk_peers_set_incarnation (self->peers, incarnation);
  self->last_renew_ok_us = g_get_monotonic_time ();
  cluster_start_grace (self);
  cluster_set_state (self, SK_CLUSTER_MEMBER);
  for (guint i = 0; i < self->listeners->len; i++) {
    Listener *l = &g_array_index (self->listeners, Listener, i);

    if (l->callbacks.joined != NULL)
      l->callbacks.joined (self, incarnation, l->user_data);
  }
  cluster_refresh_view (self);
}

static void
cluster_join (SkCluster *self)
{
  g_autofree char *info = NULL;

  if (self->join_in_flight || self->state == SK_CLUSTER_LEFT)
    return;
  cluster_set_state (self, SK_CLUSTER_JOINING);
  info = cluster_info (self);
  self->join_in_flight = TRUE;
  sk_store_join_node_async (self->store, self->config->node_id, info,
                            self->config->cluster_lease_ttl_ms, self->cancellable, on_joined, self);
}

/* ---- public ----------------------------------------------------------------------------- */

SkCluster *
sk_cluster_new (const SkConfig *config, SkStore *store)
{
  SkCluster *self = g_new0 (SkCluster, 1);

  self->config = config;
  self->store = store;
  self->cancellable = g_cancellable_new ();
  self->listeners = g_array_new (FALSE, TRUE, sizeof (Listener));
  self->state = SK_CLUSTER_JOINING;
  self->live
      = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, (GDestroyNotify)sk_store_node_free);
  self->dead = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  self->watched = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  self->retiring = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  self->peers = sk_peers_new (config, cluster_on_peer_dead, self);
  return self;
}

void
sk_cluster_free (SkCluster *self)
{
  if (self == NULL)
    return;
  g_cancellable_cancel (self->cancellable);
  g_clear_handle_id (&self->tick_id, g_source_remove);
  g_source_remove_by_user_data (self); /* a pending rejoin */
  if (self->leave_task != NULL) {
    g_task_return_new_error (self->leave_task, G_IO_ERROR, G_IO_ERROR_CANCELLED, "freed");
    g_clear_object (&self->leave_task);
  }
  g_clear_object (&self->http);
  g_clear_pointer (&self->peers, sk_peers_free);
  g_hash_table_unref (self->retiring);
  g_hash_table_unref (self->watched);
  g_hash_table_unref (self->dead);
  g_hash_table_unref (self->live);
  g_array_unref (self->listeners);
  g_object_unref (self->cancellable);
  g_free (self);
}

void
sk_cluster_add_callbacks (SkCluster *self, const SkClusterCallbacks *callbacks, gpointer user_data)
{
  Listener l = { *callbacks, user_data };

  g_array_append_val (self->listeners, l);
}

void
sk_cluster_set_info_func (SkCluster *self, SkClusterInfoFunc func, gpointer user_data)
{
  self->info_func = func;
  self->info_data = user_data;
}

void
sk_cluster_start (SkCluster *self)
{
  g_return_if_fail (self->tick_id == 0);
  cluster_join (self);
  self->tick_id = g_timeout_add (self->config->cluster_heartbeat_ms, tick_cb, self);
  /* A late renewal is a false death elsewhere: heartbeats outrank media housekeeping. */
  g_source_set_priority (g_main_context_find_source_by_id (NULL, self->tick_id), G_PRIORITY_HIGH);
}

static void
on_left (GObject *source, GAsyncResult *result, gpointer user_data)
{
  SkCluster *self = user_data;
  g_autoptr (GError) error = NULL;
  GTask *task;

  if (op_cancelled (result))
    return;
  task = g_steal_pointer (&self->leave_task);
  if (sk_store_retire_node_finish (self->store, result, &error))
    g_task_return_boolean (task, TRUE);
  else
    g_task_return_error (task, g_steal_pointer (&error));
  g_object_unref (task);
}

void
sk_cluster_leave_async (SkCluster *self, GAsyncReadyCallback callback, gpointer user_data)
{
  GTask *task = g_task_new (NULL, NULL, callback, user_data);
  guint64 incarnation = self->incarnation;

  g_task_set_source_tag (task, sk_cluster_leave_async);
  g_clear_handle_id (&self->tick_id, g_source_remove);
  cluster_set_state (self, SK_CLUSTER_LEFT);
  sk_peers_clear (self->peers);
  if (incarnation == 0 || self->leave_task != NULL) {
    g_task_return_boolean (task, TRUE);
    g_object_unref (task);
    return;
  }
  self->leave_task = task;
  sk_store_retire_node_async (self->store, self->config->node_id, incarnation, TRUE,
                              self->cancellable, on_left, self);
}

gboolean
sk_cluster_leave_finish (SkCluster *self, GAsyncResult *result, GError **error)
{
  g_return_val_if_fail (g_async_result_is_tagged (result, sk_cluster_leave_async), FALSE);
  return g_task_propagate_boolean (G_TASK (result), error);
}

void
sk_cluster_refresh_view (SkCluster *self)
{
  cluster_refresh_view (self);
}

void
sk_cluster_attach_http (SkCluster *self, SoupServer *server)
{
  sk_peers_attach_http (self->peers, server);
}

SkClusterState
sk_cluster_get_state (SkCluster *self)
{
  return self->state;
}

const char *
sk_cluster_state_to_string (SkClusterState state)
{
  switch (state) {
    case SK_CLUSTER_JOINING:
      return "joining";
    case SK_CLUSTER_MEMBER:
      return "member";
    case SK_CLUSTER_STORE_UNREACHABLE:
      return "store_unreachable";
    case SK_CLUSTER_FENCED:
      return "fenced";
    case SK_CLUSTER_LEFT:
      return "left";
  }
  return "unknown";
}

const char *
sk_cluster_get_node_id (SkCluster *self)
{
  return self->config->node_id;
}

guint64
sk_cluster_get_incarnation (SkCluster *self)
{
  return self->incarnation;
}

gboolean
sk_cluster_in_grace (SkCluster *self)
{
  return g_get_monotonic_time () < self->grace_until_us;
}

SkNodeLiveness
sk_cluster_get_liveness (SkCluster *self, const char *node, guint64 incarnation)
{
  SkStoreNode *n;
  guint64 *dead;

  if (g_strcmp0 (node, self->config->node_id) == 0) {
    if (incarnation == self->incarnation && self->incarnation != 0)
      return SK_NODE_ALIVE;
    return incarnation < self->incarnation || self->incarnation == 0 ? SK_NODE_DEAD
                                                                     : SK_NODE_UNKNOWN;
  }
  n = g_hash_table_lookup (self->live, node);
  if (n != NULL && n->incarnation == incarnation)
    return SK_NODE_ALIVE;
  dead = g_hash_table_lookup (self->dead, node);
  if ((dead != NULL && *dead >= incarnation) || (n != NULL && n->incarnation > incarnation))
    return SK_NODE_DEAD;
  /* Not alive, not known dead: the next view retires it unless it shows up. */
  g_hash_table_add (self->watched, watch_key (node, incarnation));
  return SK_NODE_UNKNOWN;
}

guint64
sk_cluster_get_live_incarnation (SkCluster *self, const char *node)
{
  SkStoreNode *n;

  if (g_strcmp0 (node, self->config->node_id) == 0)
    return self->incarnation;
  n = g_hash_table_lookup (self->live, node);
  return n != NULL ? n->incarnation : 0;
}

JsonObject *
sk_cluster_dup_node_info (SkCluster *self, const char *node)
{
  SkStoreNode *n = g_hash_table_lookup (self->live, node);
  g_autoptr (JsonNode) info = NULL;

  if (n == NULL || n->info == NULL)
    return NULL;
  info = json_from_string (n->info, NULL);
  if (info == NULL || !JSON_NODE_HOLDS_OBJECT (info))
    return NULL;
  return json_object_ref (json_node_get_object (info));
}

const char *
sk_cluster_get_node_url (SkCluster *self, const char *node)
{
  g_autoptr (JsonObject) info = NULL;

  if (g_strcmp0 (node, self->config->node_id) == 0)
    return self->config->cluster_advertise_url;
  info = sk_cluster_dup_node_info (self, node);
  if (info == NULL)
    return NULL;
  /* Interned: the view is rebuilt every heartbeat, callers keep the URL a little longer. */
  return g_intern_string (json_object_get_string_member_with_default (info, "url", ""));
}

static gint
compare_strings (gconstpointer a, gconstpointer b)
{
  return strcmp (*(const char *const *)a, *(const char *const *)b);
}

GPtrArray *
sk_cluster_get_live_nodes (SkCluster *self)
{
  GPtrArray *nodes = g_ptr_array_new ();
  GHashTableIter iter;
  gpointer key;

  g_hash_table_iter_init (&iter, self->live);
  while (g_hash_table_iter_next (&iter, &key, NULL)) {
    if (g_strcmp0 (key, self->config->node_id) != 0)
      g_ptr_array_add (nodes, key);
  }
  g_ptr_array_sort (nodes, compare_strings);
  return nodes;
}

/* ---- resources held by one node, reachable through any ---------------------------------- */

#define SK_RESOURCE_SEPARATOR '~'
#define SK_FORWARDED_HEADER "X-Streamkeeper-Forwarded"
#define SK_FORWARD_TIMEOUT_S 10

char *
sk_cluster_new_resource_id (const char *node_id)
{
  g_autofree char *secret = sk_secret_new (128);

  return g_strdup_printf ("%s%c%s", node_id, SK_RESOURCE_SEPARATOR, secret);
}

/* Hop-by-hop headers and those libsoup sets itself are not copied. */
static gboolean
header_is_end_to_end (const char *name)
{
  static const char *const skipped[]
      = { "Host",   "Connection", "Keep-Alive", "Content-Length", "Transfer-Encoding", "Upgrade",
          "Server", "Date",       "TE" };

  for (guint i = 0; i < G_N_ELEMENTS (skipped); i++) {
    if (g_ascii_strcasecmp (name, skipped[i]) == 0)
      return FALSE;
  }
  return TRUE;
}

static void
copy_headers (SoupMessageHeaders *from, SoupMessageHeaders *to)
{
  SoupMessageHeadersIter iter;
  const char *name, *value;

  soup_message_headers_iter_init (&iter, from);
  while (soup_message_headers_iter_next (&iter, &name, &value)) {
    if (header_is_end_to_end (name))
      soup_message_headers_append (to, name, value);
  }
}

static void
on_forwarded (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (SoupServerMessage) msg = user_data;
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) body
      = soup_session_send_and_read_finish (SOUP_SESSION (source), result, &error);
  SoupMessage *out = soup_session_get_async_result_message (SOUP_SESSION (source), result);
  SoupMessageHeaders *headers = soup_server_message_get_response_headers (msg);

  if (body == NULL) {
    g_warning ("cluster: forwarding %s %s: %s", soup_server_message_get_method (msg),
               g_uri_get_path (soup_server_message_get_uri (msg)), error->message);
    sk_http_reply_error (msg, SOUP_STATUS_BAD_GATEWAY, "unavailable",
                         "the node holding this resource cannot be reached");
  } else {
    const char *type
        = soup_message_headers_get_content_type (soup_message_get_response_headers (out), NULL);
    gsize len = 0;
    const char *data = g_bytes_get_data (body, &len);

    copy_headers (soup_message_get_response_headers (out), headers);
    soup_server_message_set_status (msg, soup_message_get_status (out),
                                    soup_message_get_reason_phrase (out));
    if (len > 0)
      soup_server_message_set_response (msg, type, SOUP_MEMORY_COPY, data, len);
  }
  soup_server_message_unpause (msg);
}

gboolean
sk_cluster_forward (SkCluster *self, SoupServerMessage *msg, const char *resource_id)
{
  const char *sep = resource_id != NULL ? strchr (resource_id, SK_RESOURCE_SEPARATOR) : NULL;
  g_autofree char *node = NULL;
  g_autofree char *target = NULL;
  SoupMessageHeaders *in = soup_server_message_get_request_headers (msg);
  SoupMessageBody *req_body = soup_server_message_get_request_body (msg);
  GUri *uri = soup_server_message_get_uri (msg);
  const char *url, *query = g_uri_get_query (uri);
  SoupMessage *out;

  if (self == NULL || sep == NULL || sep == resource_id)
    return FALSE;
  node = g_strndup (resource_id, sep - resource_id);
  /* Ours, or already forwarded once (no loops between nodes that disagree). */
  if (strcmp (node, self->config->node_id) == 0
      || soup_message_headers_get_one (in, SK_FORWARDED_HEADER) != NULL)
    return FALSE;
  url = sk_cluster_get_node_url (self, node);
  if (url == NULL || url[0] == '\0')
    return FALSE;

  target = g_strdup_printf ("%s%s%s%s", url, g_uri_get_path (uri), query != NULL ? "?" : "",
                            query != NULL ? query : "");
  out = soup_message_new (soup_server_message_get_method (msg), target);
  if (out == NULL)
    return FALSE;
  copy_headers (in, soup_message_get_request_headers (out));
  soup_message_headers_replace (soup_message_get_request_headers (out), SK_FORWARDED_HEADER,
                                self->config->node_id);
  if (req_body != NULL && req_body->length > 0) {
    g_autoptr (GBytes) bytes = soup_message_body_flatten (req_body);

    soup_message_set_request_body_from_bytes (out, soup_message_headers_get_content_type (in, NULL),
                                              bytes);
  }
  if (self->http == NULL)
    self->http = soup_session_new_with_options ("timeout", SK_FORWARD_TIMEOUT_S, NULL);
  soup_server_message_pause (msg);
  soup_session_send_and_read_async (self->http, out, G_PRIORITY_DEFAULT, NULL, on_forwarded,
                                    g_object_ref (msg));
  g_object_unref (out);
  return TRUE;
}
