/*
 * streamkeeper: where a room is hosted. Placement claims the room (compare-and-set on its
 * placement in the store) and learns where its log stands; a room placed on another live node
 * is a proxy whose participants publish there; a dead host's room is rebuilt here from its
 * snapshot and log (takeover), orphans are adopted by one survivor, and a draining node hands
 * its rooms over.
 */
#include "rooms/sk-rooms-private.h"

#include <string.h>

#define PLACE_MAX_ATTEMPTS 5
#define REBUILD_READ_LIMIT 1000
/* The chosen survivor adopts an orphan only this long after it first saw it: a node with a live
 * publisher in that room claims it at once (room_follow_host) and must not lose that race to a
 * node that has nothing there. Nodes learn of a death at different times: one whose peer
 * connection to the dying node ended while its port still accepted looks again only after
 * sk-peers.c's first backoff (100 ms). The wait is time, not views: the other node's claim
 * changes the placements and so brings a view at once (a wait of "one more view" lost the
 * room that way, seen in CI). */
#define ORPHAN_DEFER_MS 300
/* Any survivor, not only the chosen one, claims an orphan nobody took after this many views
 * and at least this long (the chosen one may be full, or dead too). */
#define ORPHAN_PATIENCE_VIEWS 5
#define ORPHAN_PATIENCE_MS (2 * ORPHAN_DEFER_MS)

typedef struct {
  gint64 first_seen_us;
  guint views;
} OrphanSighting;

/* json-glib 1.6 has no _with_default getters for containers. */
static JsonObject *
json_get_object (JsonObject *o, const char *member, JsonObject *fallback)
{
  JsonNode *node = json_object_get_member (o, member);

  return node != NULL && JSON_NODE_HOLDS_OBJECT (node) ? json_node_get_object (node) : fallback;
}

static JsonArray *
json_get_array (JsonObject *o, const char *member, JsonArray *fallback)
{
  JsonNode *node = json_object_get_member (o, member);

  return node != NULL && JSON_NODE_HOLDS_ARRAY (node) ? json_node_get_array (node) : fallback;
}

/* ---- placement: claim the room, then learn where its log stands ------------------------- */

static void
room_place_failed (SkRoom *room, const GError *error)
{
  if (++room->place_attempts >= PLACE_MAX_ATTEMPTS) {
    sk_room_lost (room, error);
    return;
  }
  g_debug ("room %s: placement attempt %u failed: %s", room->name, room->place_attempts,
           error->message);
  /* A lost CAS race is retried at once with the fresh epoch; anything else waits a little. */
  if (g_error_matches (error, SK_ERROR, SK_ERROR_CONFLICT))
    sk_room_place (room);
  else
    sk_room_retry_later (room);
}

static gboolean
room_is_takeover (SkRoom *room)
{
  /* The log was someone else's (or an earlier incarnation's) until our claim. */
  return room->prev_node != NULL && room->prev_epoch + 1 == room->epoch && room->fresh;
}

static void room_rebuild (SkRoom *room);

static void
room_placed (SkRoom *room)
{
  room->placed = TRUE;
  room->place_attempts = 0;
  SK_TIMING ("room %s: placed here (epoch %" G_GUINT64_FORMAT ", last seq %" G_GUINT64_FORMAT ")",
             room->name, room->epoch, room->last_seq);
  if (room->adopted && !room_is_takeover (room)) {
    /* Released or rebuilt elsewhere meanwhile: nothing to adopt, give the claim back. */
    room->finished = TRUE;
    sk_room_dispose (room);
    return;
  }
  if (room_is_takeover (room)) {
    room->rebuilding = TRUE;
    room_rebuild (room);
    return;
  }
  if (room->fresh) {
    PendingEvent *pe = g_new0 (PendingEvent, 1);

    room->fresh = FALSE;
    pe->event = sk_room_event_new (room, "RoomStarted");
    pe->webhook = "room_started";
    g_queue_push_head (&room->pending, pe);
  }
  sk_room_pump (room);
}

static void
on_last_seq (GObject *source, GAsyncResult *result, gpointer user_data)
{
  SkRoom *room = user_data;
  g_autoptr (GError) error = NULL;
  guint64 seq = 0;

  if (sk_rooms_store_op_cancelled (result))
    return;
  if (!sk_store_last_seq_finish (room->manager->store, result, &seq, &error)) {
    room_place_failed (room, error);
    return;
  }
  room->last_seq = seq;
  room_placed (room);
}

static void
on_claimed (GObject *source, GAsyncResult *result, gpointer user_data)
{
  SkRoom *room = user_data;
  g_autoptr (GError) error = NULL;
  guint64 epoch = 0;

  if (sk_rooms_store_op_cancelled (result))
    return;
  if (!sk_store_claim_room_finish (room->manager->store, result, &epoch, &error)) {
    room_place_failed (room, error);
    return;
  }
  room->epoch = epoch;
  SK_TIMING ("room %s: claimed (epoch %" G_GUINT64_FORMAT ")", room->name, epoch);
  /* Read after the claim: from now on no older writer can add to the log. */
  sk_store_last_seq_async (room->manager->store, room->name, room->cancellable, on_last_seq, room);
}

guint64
sk_room_manager_incarnation (SkRoomManager *self)
{
  return self->cluster != NULL ? sk_cluster_get_incarnation (self->cluster) : 0;
}

/* Rooms hosted (or being placed) here, @except aside. */
static guint
manager_n_hosted (SkRoomManager *self, SkRoom *except)
{
  GHashTableIter iter;
  SkRoom *room;
  guint n = 0;

  g_hash_table_iter_init (&iter, self->rooms);
  while (g_hash_table_iter_next (&iter, NULL, (gpointer *)&room))
    if (room != except && !room->remote && !room->finished && !room->lost)
      n++;
  return n;
}

static gboolean
manager_is_full (SkRoomManager *self, SkRoom *room)
{
  return self->cluster != NULL && self->config->cluster_max_rooms > 0
         && manager_n_hosted (self, room) >= self->config->cluster_max_rooms;
}

/* Rooms placed on @node as of the last view. */
static guint
manager_n_placed_on (SkRoomManager *self, const char *node)
{
  GHashTableIter iter;
  const char *host;
  guint n = 0;

  g_hash_table_iter_init (&iter, self->hosts);
  while (g_hash_table_iter_next (&iter, NULL, (gpointer *)&host))
    if (strcmp (host, node) == 0)
      n++;
  return n;
}

/*
 * Another live node to host @room_name: one that accepts streams (not draining, store
 * reachable), under its own max_rooms if @need_capacity, the least loaded first (the room's
 * name breaks ties, so concurrent callers agree). NULL if there is none.
 */
static const char *
manager_pick_host (SkRoomManager *self, const char *room_name, gboolean need_capacity,
                   guint64 *incarnation)
{
  g_autoptr (GPtrArray) live = sk_cluster_get_live_nodes (self->cluster);
  const char *best = NULL;
  guint best_load = G_MAXUINT;

  for (guint k = 0; k < live->len; k++) {
    /* Start at the name's hash: among equals, rooms spread as failover spreads them. */
    const char *node = g_ptr_array_index (live, (g_str_hash (room_name) + k) % live->len);
    g_autoptr (JsonObject) info = sk_cluster_dup_node_info (self->cluster, node);
    guint max_rooms, load;

    if (info == NULL || !json_object_get_boolean_member_with_default (info, "accepting", FALSE))
      continue;
    max_rooms = (guint)json_object_get_int_member_with_default (info, "max_rooms", 0);
    load = manager_n_placed_on (self, node);
    if (need_capacity && max_rooms > 0 && load >= max_rooms)
      continue;
    if (load < best_load) {
      best = node;
      best_load = load;
    }
  }
  if (best != NULL && incarnation != NULL)
    *incarnation = sk_cluster_get_live_incarnation (self->cluster, best);
  return best;
}

/* Placed on another node because this one is full: that node adopts it (it finds the
 * placement naming it in its view) and our participants publish there. */
static void
on_claimed_for_other (GObject *source, GAsyncResult *result, gpointer user_data)
{
  SkRoom *room = user_data;
  g_autoptr (GError) error = NULL;
  guint64 epoch = 0;

  if (sk_rooms_store_op_cancelled (result))
    return;
  if (!sk_store_claim_room_finish (room->manager->store, result, &epoch, &error)) {
    room_place_failed (room, error); /* a conflict re-reads the placement someone else made */
    return;
  }
  sk_room_become_proxy (room, room->host_node, room->host_incarnation, epoch);
}

static void
on_placement (GObject *source, GAsyncResult *result, gpointer user_data)
{
  SkRoom *room = user_data;
  SkRoomManager *self;
  g_autoptr (GError) error = NULL;
  g_autofree char *node = NULL;
  guint64 epoch = 0, incarnation = 0;

  if (sk_rooms_store_op_cancelled (result))
    return; /* @room may be gone */
  self = room->manager;
  if (!sk_store_get_placement_finish (self->store, result, &node, &incarnation, &epoch, &error)) {
    room_place_failed (room, error);
    return;
  }

  SK_TIMING ("room %s: placement is %s (epoch %" G_GUINT64_FORMAT ")", room->name,
             node != NULL ? node : "none", epoch);
  if (self->cluster != NULL && node != NULL && epoch != room->epoch) {
    SkNodeLiveness liveness = sk_cluster_get_liveness (self->cluster, node, incarnation);

    if (liveness == SK_NODE_UNKNOWN || sk_room_manager_incarnation (self) == 0) {
      /* Its lease is gone but it is not declared dead yet: wait for the verdict rather
       * than race a node that may only be slow. */
      sk_room_retry_later (room);
      return;
    }
    if (liveness == SK_NODE_ALIVE && strcmp (node, self->config->node_id) != 0) {
      sk_room_become_proxy (room, node, incarnation, epoch);
      return;
    }
  }
  if (node == NULL && room->fresh && !room->adopted && manager_is_full (self, room)) {
    guint64 target_incarnation = 0;
    const char *target = manager_pick_host (self, room->name, TRUE, &target_incarnation);

    if (target != NULL) {
      g_message ("room %s: this node hosts its max_rooms (%u); placing it on node %s", room->name,
                 self->config->cluster_max_rooms, target);
      g_free (room->host_node);
      room->host_node = g_strdup (target);
      room->host_incarnation = target_incarnation;
      sk_store_claim_room_async (self->store, room->name, target, target_incarnation, 0,
                                 room->cancellable, on_claimed_for_other, room);
      return;
    }
    g_warning ("room %s: this node hosts its max_rooms (%u) but no other node has room; "
               "hosting it here",
               room->name, self->config->cluster_max_rooms);
  }
  g_free (room->prev_node);
  room->prev_node = g_steal_pointer (&node);
  room->prev_incarnation = incarnation;
  room->prev_epoch = epoch;
  sk_store_claim_room_async (self->store, room->name, self->config->node_id,
                             sk_room_manager_incarnation (self), epoch, room->cancellable,
                             on_claimed, room);
}

void
sk_room_place (SkRoom *room)
{
  sk_store_get_placement_async (room->manager->store, room->name, room->cancellable, on_placement,
                                room);
}

/* ---- proxy: a room hosted on another node ----------------------------------------------- */

static void
on_publication_state (SkRemotePublication *publication, SkRemoteState state, const GError *error,
                      gpointer user_data)
{
  SkParticipant *p = user_data;

  if (state == SK_REMOTE_FAILED)
    g_warning ("room %s: participant %s cannot publish to host %s: %s; retrying", p->room->name,
               p->sid, p->room->host_node, error != NULL ? error->message : "failed");
  else if (state == SK_REMOTE_PUBLISHING)
    g_message ("room %s: participant %s publishes to host %s", p->room->name, p->sid,
               p->room->host_node);
}

static const char *
room_host_url (SkRoom *room)
{
  return sk_cluster_get_node_url (room->manager->cluster, room->host_node);
}

/* Our media of @p goes to the room's host, under @p's sids. */
void
sk_participant_start_remote (SkParticipant *p)
{
  g_autoptr (JsonObject) o = sk_participant_to_json (p);
  g_autoptr (JsonNode) node = json_node_init_object (json_node_alloc (), o);
  g_autofree char *json = json_to_string (node, FALSE);
  const char *url = room_host_url (p->room);

  SK_TIMING ("room %s: participant %s publishes to host %s (%u tracks)", p->room->name, p->sid,
             p->room->host_node, p->tracks->len);
  g_clear_pointer (&p->publication, sk_remote_publication_free);
  p->publication = sk_remote_publication_new (p->room->manager->config, p->room->name, json,
                                              on_publication_state, p);
  sk_remote_publication_expect_tracks (p->publication, p->expected_tracks);
  for (guint i = 0; i < p->tracks->len; i++)
    sk_remote_publication_add_track (p->publication, g_ptr_array_index (p->tracks, i));
  if (url != NULL)
    sk_remote_publication_set_target (p->publication, url);
}

/*
 * The room lives on @node: what we queued for its log is the host's to write (it will, from
 * our publications: ParticipantConnected and TrackPublished under the same sids), and our
 * participants' media goes there.
 */
void
sk_room_become_proxy (SkRoom *room, const char *node, guint64 incarnation, guint64 epoch)
{
  g_message ("room %s is hosted on node %s (epoch %" G_GUINT64_FORMAT
             "); publishing %u participant(s) there",
             room->name, node, epoch, room->participants->len);
  g_queue_clear_full (&room->pending, (GDestroyNotify)sk_rooms_pending_event_free);
  room->remote = TRUE;
  room->fresh = FALSE;
  room->placed = FALSE;
  g_free (room->host_node);
  room->host_node = g_strdup (node);
  room->host_incarnation = incarnation;
  room->host_epoch = epoch;
  for (guint i = 0; i < room->participants->len; i++)
    sk_participant_start_remote (g_ptr_array_index (room->participants, i));
}

/* The view says where the room is now. */
static void
room_follow_host (SkRoom *room, SkStorePlacement *pl)
{
  SkRoomManager *self = room->manager;
  SkNodeLiveness liveness;

  if (pl == NULL) {
    /* The host let the room go (it saw nobody): start it here again, with our participants. */
    g_message ("room %s: its host released it; hosting it here", room->name);
  } else if (pl->epoch == room->host_epoch && g_strcmp0 (pl->node, room->host_node) == 0) {
    liveness = sk_cluster_get_liveness (self->cluster, pl->node, pl->incarnation);
    if (liveness != SK_NODE_DEAD)
      return;
    /* Our publishers live: this node is the natural new host. */
    g_message ("room %s: its host %s died; claiming it here", room->name, pl->node);
  } else if (g_strcmp0 (pl->node, room->host_node) == 0
             && pl->incarnation == room->host_incarnation) {
    room->host_epoch = pl->epoch; /* the same host re-claimed it (a hand-over completing) */
    return;
  } else if (strcmp (pl->node, self->config->node_id) != 0
             && sk_cluster_get_liveness (self->cluster, pl->node, pl->incarnation)
                    == SK_NODE_ALIVE) {
    g_message ("room %s moved to node %s (epoch %" G_GUINT64_FORMAT "); republishing there",
               room->name, pl->node, pl->epoch);
    g_free (room->host_node);
    room->host_node = g_strdup (pl->node);
    room->host_incarnation = pl->incarnation;
    room->host_epoch = pl->epoch;
    for (guint i = 0; i < room->participants->len; i++) {
      SkParticipant *p = g_ptr_array_index (room->participants, i);
      const char *url = room_host_url (room);

      if (p->publication != NULL && url != NULL)
        sk_remote_publication_set_target (p->publication, url);
    }
    return;
  } else {
    return; /* not settled yet: the next view tells */
  }

  /* Host here: the publications stop (nobody to tell), placement decides the rest. */
  for (guint i = 0; i < room->participants->len; i++) {
    SkParticipant *p = g_ptr_array_index (room->participants, i);

    g_clear_pointer (&p->publication, sk_remote_publication_free);
  }
  room->remote = FALSE;
  if (pl == NULL) {
    /* A new life of the room: it starts, and our participants join it again. */
    room->fresh = TRUE;
    room->epoch = 0;
    for (guint i = 0; i < room->participants->len; i++) {
      SkParticipant *p = g_ptr_array_index (room->participants, i);

      sk_room_enqueue (room, sk_participant_event_new (p, "ParticipantConnected"),
                       "participant_joined");
      for (guint j = 0; j < p->tracks->len; j++) {
        JsonObject *event = sk_participant_event_new (p, "TrackPublished");

        json_object_set_object_member (event, "track",
                                       sk_rooms_track_to_json (g_ptr_array_index (p->tracks, j)));
        sk_room_enqueue (room, event, "track_published");
      }
    }
  } else {
    /* A takeover (the log names our participants already): rebuilt, no events for them. */
    room->fresh = TRUE;
    room->epoch = 0;
  }
  sk_room_place (room);
}

/* ---- takeover: a dead host's room is rebuilt from the store ------------------------------ */

typedef struct {
  SkRoom *room;
  JsonObject *participants; /* sid → participant object with "tracks" (object sid → track) */
  GPtrArray *order;         /* sids in join order */
  char *writer;             /* node that wrote the snapshot (the previous host) */
  guint64 seq;              /* state as of this seq */
  gboolean open;            /* the log leaves the room started (not finished, not empty) */
} Rebuild;

static void
rebuild_free (Rebuild *rb)
{
  json_object_unref (rb->participants);
  g_ptr_array_unref (rb->order);
  g_free (rb->writer);
  g_free (rb);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC (Rebuild, rebuild_free)

static void
rebuild_add_participant (Rebuild *rb, JsonObject *participant)
{
  const char *sid = json_object_get_string_member_with_default (participant, "sid", NULL);
  JsonObject *copy;

  if (sid == NULL)
    return;
  copy = json_object_new ();
  static const char *const fields[] = { "sid", "identity", "name", "kind", "ingress_node" };
  for (guint i = 0; i < G_N_ELEMENTS (fields); i++)
    json_object_set_string_member (
        copy, fields[i], json_object_get_string_member_with_default (participant, fields[i], ""));
  json_object_set_int_member (
      copy, "ingress_incarnation",
      json_object_get_int_member_with_default (participant, "ingress_incarnation", 0));
  json_object_set_object_member (copy, "tracks", json_object_new ());
  if (!json_object_has_member (rb->participants, sid))
    g_ptr_array_add (rb->order, g_strdup (sid));
  json_object_set_object_member (rb->participants, sid, copy);
}

static void
rebuild_remove_participant (Rebuild *rb, const char *sid)
{
  guint index;

  json_object_remove_member (rb->participants, sid);
  if (g_ptr_array_find_with_equal_func (rb->order, sid, g_str_equal, &index))
    g_ptr_array_remove_index (rb->order, index);
}

static void
rebuild_clear (Rebuild *rb)
{
  json_object_unref (rb->participants);
  rb->participants = json_object_new ();
  g_ptr_array_set_size (rb->order, 0);
}

/* Folds one logged event into the state. */
static void
rebuild_apply (Rebuild *rb, JsonObject *event)
{
  const char *type = json_object_get_string_member_with_default (event, "event", "");
  JsonObject *p = json_get_object (event, "participant", NULL);
  JsonObject *t = json_get_object (event, "track", NULL);
  const char *sid = p != NULL ? json_object_get_string_member_with_default (p, "sid", "") : "";
  JsonObject *known = sid[0] != '\0' && json_object_has_member (rb->participants, sid)
                          ? json_object_get_object_member (rb->participants, sid)
                          : NULL;

  if (strcmp (type, "RoomStarted") == 0 || strcmp (type, "RoomFinished") == 0) {
    rebuild_clear (rb);
    rb->open = strcmp (type, "RoomStarted") == 0;
  } else if (strcmp (type, "RoomMoved") == 0) {
    rb->open = TRUE;
  } else if (strcmp (type, "ParticipantConnected") == 0 && p != NULL) {
    rebuild_add_participant (rb, p);
  } else if (strcmp (type, "ParticipantDisconnected") == 0) {
    rebuild_remove_participant (rb, sid);
  } else if (strcmp (type, "TrackPublished") == 0 && known != NULL && t != NULL) {
    const char *track_sid = json_object_get_string_member_with_default (t, "sid", NULL);

    if (track_sid != NULL)
      json_object_set_object_member (json_object_get_object_member (known, "tracks"), track_sid,
                                     json_object_ref (t));
  } else if (strcmp (type, "TrackUnpublished") == 0 && known != NULL && t != NULL) {
    const char *track_sid = json_object_get_string_member_with_default (t, "sid", NULL);

    if (track_sid != NULL)
      json_object_remove_member (json_object_get_object_member (known, "tracks"), track_sid);
  }
}

static GstCaps *
caps_for_codec (const char *kind, const char *codec)
{
  if (g_strcmp0 (kind, "audio") == 0)
    return gst_caps_new_empty_simple ("audio/x-opus");
  if (g_ascii_strcasecmp (codec, "VP8") == 0)
    return gst_caps_new_empty_simple ("video/x-vp8");
  return gst_caps_new_simple ("video/x-h264", "stream-format", G_TYPE_STRING, "byte-stream",
                              "alignment", G_TYPE_STRING, "au", NULL);
}

static gboolean
participant_ingress_is_dead (SkRoom *room, SkParticipant *p)
{
  SkRoomManager *self = room->manager;
  guint64 incarnation = p->ingress_incarnation;

  if (self->cluster == NULL)
    return FALSE;
  /* Joined on the dead host itself: its incarnation is the placement's. */
  if (incarnation == 0 && g_strcmp0 (p->ingress_node, room->prev_node) == 0)
    incarnation = room->prev_incarnation;
  if (incarnation == 0)
    return FALSE;
  return sk_cluster_get_liveness (self->cluster, p->ingress_node, incarnation) == SK_NODE_DEAD;
}

/*
 * The state is known: the participants the dead host had are back in the room (without
 * events: they never left), RoomMoved goes first, then the departures owed for participants
 * whose ingress died with it (node_failure), then what was queued here while placing.
 */
static void
rebuild_finish (Rebuild *rb)
{
  SkRoom *room = rb->room;
  GQueue queued = room->pending;
  JsonObject *moved;
  guint n_local = room->participants->len;

  g_queue_init (&room->pending);
  room->fresh = FALSE;
  room->rebuilding = FALSE;

  for (guint i = 0; i < rb->order->len; i++) {
    const char *sid = g_ptr_array_index (rb->order, i);
    JsonObject *po = json_object_get_object_member (rb->participants, sid);
    JsonObject *tracks = json_object_get_object_member (po, "tracks");
    g_autoptr (GList) track_sids = json_object_get_members (tracks);
    SkParticipant *p;

    if (sk_room_find_participant (room, sid) != NULL)
      continue;
    p = sk_participant_new (room, sid, json_object_get_string_member (po, "identity"),
                            json_object_get_string_member (po, "name"),
                            json_object_get_string_member (po, "kind"),
                            json_object_get_string_member (po, "ingress_node"));
    p->ingress_incarnation = (guint64)json_object_get_int_member (po, "ingress_incarnation");
    /* Rebuilt ones go before the ones that joined here meanwhile: that was the join order. */
    g_ptr_array_insert (room->participants, (gint)(room->participants->len - n_local), p);
    for (GList *l = track_sids; l != NULL; l = l->next) {
      JsonObject *to = json_object_get_object_member (tracks, l->data);
      const char *kind = json_object_get_string_member_with_default (to, "kind", "video");
      g_autoptr (GstCaps) caps
          = caps_for_codec (kind, json_object_get_string_member_with_default (to, "codec", "H264"));

      g_ptr_array_add (
          p->tracks,
          sk_track_new (g_strcmp0 (kind, "audio") == 0 ? SK_TRACK_KIND_AUDIO : SK_TRACK_KIND_VIDEO,
                        l->data, caps));
    }
  }

  /* A room handed over by a draining node was placed on us by that node itself. */
  const char *from = room->prev_node;
  gboolean handed_over = g_strcmp0 (from, room->manager->config->node_id) == 0;
  if (handed_over && rb->writer != NULL)
    from = rb->writer;
  if (!rb->open) {
    /* Nothing had started it: placed here by a node over its max_rooms (or a dead host's
     * room that had already finished). */
    g_message ("room %s: placed on this node (epoch %" G_GUINT64_FORMAT "); starting it",
               room->name, room->epoch);
    sk_room_enqueue (room, sk_room_event_new (room, "RoomStarted"), "room_started");
  } else {
    moved = sk_room_event_new (room, "RoomMoved");
    json_object_set_string_member (moved, "from_node", from);
    json_object_set_int_member (moved, "epoch", (gint64)room->epoch);
    json_object_set_string_member (moved, "reason",
                                   handed_over ? SK_REASON_DRAIN : SK_REASON_NODE_FAILURE);
    g_message ("room %s: rebuilt here from node %s (epoch %" G_GUINT64_FORMAT
               ", %u participants, %s)",
               room->name, from, room->epoch, rb->order->len,
               handed_over ? "handed over" : "its host died");
    sk_room_enqueue (room, moved, NULL);
  }
  SK_TIMING ("room %s: rebuilt", room->name);

  for (guint i = 0; i < room->participants->len;) {
    SkParticipant *p = g_ptr_array_index (room->participants, i);

    if (i < room->participants->len - n_local && participant_ingress_is_dead (room, p)) {
      g_message ("room %s: participant %s (%s) ran on dead node %s", room->name, p->sid,
                 p->identity, p->ingress_node);
      sk_participant_evict (p, SK_REASON_NODE_FAILURE);
      continue;
    }
    i++;
  }
  /* Invariant 4 across the move: a newcomer here replaces a rebuilt one of its identity. */
  for (guint i = 0; i + n_local < room->participants->len;) {
    SkParticipant *p = g_ptr_array_index (room->participants, i);
    gboolean replaced = FALSE;

    for (guint j = room->participants->len - n_local; j < room->participants->len; j++) {
      if (strcmp (((SkParticipant *)g_ptr_array_index (room->participants, j))->identity,
                  p->identity)
          == 0) {
        sk_participant_evict (p, SK_REASON_REPLACED);
        replaced = TRUE;
        break;
      }
    }
    if (!replaced)
      i++;
  }
  /* What joined here while the room was being placed is queued already (sids borrowed from
   * @queued, appended below). */
  g_autoptr (GHashTable) queued_sids = g_hash_table_new (g_str_hash, g_str_equal);
  for (GList *l = queued.head; l != NULL; l = l->next) {
    JsonObject *event = ((PendingEvent *)l->data)->event;
    const char *type = json_object_get_string_member_with_default (event, "event", "");
    JsonObject *o = strcmp (type, "ParticipantConnected") == 0
                        ? json_get_object (event, "participant", NULL)
                    : strcmp (type, "TrackPublished") == 0 ? json_get_object (event, "track", NULL)
                                                           : NULL;

    if (o != NULL)
      g_hash_table_add (queued_sids,
                        (gpointer)json_object_get_string_member_with_default (o, "sid", ""));
  }
  /* Ours, proxied to the dead host: what it never wrote (its POST was not through, a track
   * came or went meanwhile) is written now. */
  for (guint i = room->participants->len - n_local; i < room->participants->len; i++) {
    SkParticipant *p = g_ptr_array_index (room->participants, i);
    JsonObject *known = json_get_object (rb->participants, p->sid, NULL);
    JsonObject *known_tracks = known != NULL ? json_get_object (known, "tracks", NULL) : NULL;

    if (known == NULL && !g_hash_table_contains (queued_sids, p->sid))
      sk_room_enqueue (room, sk_participant_event_new (p, "ParticipantConnected"),
                       "participant_joined");
    for (guint j = 0; j < p->tracks->len; j++) {
      SkTrack *track = g_ptr_array_index (p->tracks, j);

      if ((known_tracks == NULL || !json_object_has_member (known_tracks, sk_track_get_sid (track)))
          && !g_hash_table_contains (queued_sids, sk_track_get_sid (track))) {
        JsonObject *event = sk_participant_event_new (p, "TrackPublished");

        json_object_set_object_member (event, "track", sk_rooms_track_to_json (track));
        sk_room_enqueue (room, event, "track_published");
      }
    }
  }

  if (room->participants->len > 0)
    g_clear_handle_id (&room->empty_timeout_id, g_source_remove);

  while (!g_queue_is_empty (&queued))
    g_queue_push_tail (&room->pending, g_queue_pop_head (&queued));
  rebuild_free (rb);
  sk_room_pump (room);
}

static void
on_rebuild_events (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Rebuild *rb = user_data;
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) events = NULL;

  if (sk_rooms_store_op_cancelled (result)) {
    rebuild_free (rb);
    return;
  }
  events = sk_store_read_events_finish (rb->room->manager->store, result, &error);
  if (events == NULL) {
    sk_room_lost (rb->room, error);
    rebuild_free (rb);
    return;
  }
  for (guint i = 0; i < events->len; i++) {
    SkStoreEvent *ev = g_ptr_array_index (events, i);
    g_autoptr (JsonNode) node = json_from_string (ev->json, NULL);

    if (node != NULL && JSON_NODE_HOLDS_OBJECT (node))
      rebuild_apply (rb, json_node_get_object (node));
    rb->seq = ev->seq;
  }
  if (events->len == REBUILD_READ_LIMIT && rb->seq < rb->room->last_seq) {
    sk_store_read_events_async (rb->room->manager->store, rb->room->name, rb->seq,
                                REBUILD_READ_LIMIT, rb->room->cancellable, on_rebuild_events, rb);
    return;
  }
  rebuild_finish (rb);
}

static void
on_rebuild_snapshot (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Rebuild *rb = user_data;
  g_autoptr (GError) error = NULL;
  g_autofree char *json = NULL;

  if (sk_rooms_store_op_cancelled (result)) {
    rebuild_free (rb);
    return;
  }
  json = sk_store_get_finish (rb->room->manager->store, result, &error);
  if (json != NULL) {
    g_autoptr (JsonNode) node = json_from_string (json, NULL);
    JsonObject *o
        = node != NULL && JSON_NODE_HOLDS_OBJECT (node) ? json_node_get_object (node) : NULL;
    JsonArray *ps = o != NULL ? json_get_array (o, "participants", NULL) : NULL;

    if (ps != NULL
        && (guint64)json_object_get_int_member_with_default (o, "seq", 0) <= rb->room->last_seq) {
      rb->seq = (guint64)json_object_get_int_member_with_default (o, "seq", 0);
      rb->writer = g_strdup (json_object_get_string_member_with_default (o, "node", NULL));
      rb->open = TRUE; /* snapshots are written of started rooms only */
      for (guint i = 0; i < json_array_get_length (ps); i++) {
        JsonObject *po = json_array_get_object_element (ps, i);
        JsonArray *tracks = json_get_array (po, "tracks", NULL);
        JsonObject *known;

        rebuild_add_participant (rb, po);
        known = json_object_get_object_member (
            json_object_get_object_member (rb->participants,
                                           json_object_get_string_member (po, "sid")),
            "tracks");
        for (guint j = 0; tracks != NULL && j < json_array_get_length (tracks); j++) {
          JsonObject *to = json_array_get_object_element (tracks, j);
          const char *track_sid = json_object_get_string_member_with_default (to, "sid", NULL);

          if (track_sid != NULL)
            json_object_set_object_member (known, track_sid, json_object_ref (to));
        }
      }
    }
  }
  /* No snapshot (or an unreadable one): the log from its start tells the same story. */
  sk_store_read_events_async (rb->room->manager->store, rb->room->name, rb->seq, REBUILD_READ_LIMIT,
                              rb->room->cancellable, on_rebuild_events, rb);
}

static void
room_rebuild (SkRoom *room)
{
  Rebuild *rb = g_new0 (Rebuild, 1);

  rb->room = room;
  rb->participants = json_object_new ();
  rb->order = g_ptr_array_new_with_free_func (g_free);
  sk_store_get_async (room->manager->store, SK_ROOMS_NS, room->name, room->cancellable,
                      on_rebuild_snapshot, rb);
}

/* ---- cluster: failure handling --------------------------------------------------------- */

static GPtrArray *
manager_rooms (SkRoomManager *self)
{
  GPtrArray *rooms = g_ptr_array_new ();
  GHashTableIter iter;
  SkRoom *room;

  g_hash_table_iter_init (&iter, self->rooms);
  while (g_hash_table_iter_next (&iter, NULL, (gpointer *)&room))
    g_ptr_array_add (rooms, room);
  return rooms;
}

/* Participants published from another node that died leave with node_failure. */
static void
room_check_remote_participants (SkRoom *room)
{
  const char *me = room->manager->config->node_id;

  for (guint i = 0; i < room->participants->len;) {
    SkParticipant *p = g_ptr_array_index (room->participants, i);

    if (strcmp (p->ingress_node, me) != 0 && participant_ingress_is_dead (room, p)) {
      g_message ("room %s: participant %s (%s): its ingress node %s died", room->name, p->sid,
                 p->identity, p->ingress_node);
      sk_participant_evict (p, SK_REASON_NODE_FAILURE);
      continue;
    }
    i++;
  }
}

static gint
compare_strings (gconstpointer a, gconstpointer b)
{
  return strcmp (*(const char *const *)a, *(const char *const *)b);
}

/* One survivor is the first choice for each orphaned room (spreading them by name); the
 * others step in only if it does not. The placement's compare-and-set settles any race. */
static gboolean
manager_is_first_choice (SkRoomManager *self, const char *room)
{
  g_autoptr (GPtrArray) live = sk_cluster_get_live_nodes (self->cluster);

  g_ptr_array_add (live, (gpointer)self->config->node_id);
  g_ptr_array_sort (live, compare_strings);
  return strcmp (g_ptr_array_index (live, g_str_hash (room) % live->len), self->config->node_id)
         == 0;
}

static SkStorePlacement *
manager_find_placement (GPtrArray *placements, const char *room)
{
  for (guint i = 0; i < placements->len; i++) {
    SkStorePlacement *pl = g_ptr_array_index (placements, i);

    if (strcmp (pl->room, room) == 0)
      return pl;
  }
  return NULL;
}

static gboolean
on_orphan_view (gpointer user_data)
{
  SkRoomManager *self = user_data;

  self->orphan_view_id = 0;
  sk_cluster_refresh_view (self->cluster);
  return G_SOURCE_REMOVE;
}

static void
on_cluster_view (SkCluster *cluster, GPtrArray *placements, gpointer user_data)
{
  SkRoomManager *self = user_data;
  g_autoptr (GPtrArray) rooms = NULL;
  gint64 now_us = g_get_monotonic_time ();

  if (self->shutting_down || sk_cluster_get_state (cluster) != SK_CLUSTER_MEMBER)
    return;

  g_hash_table_remove_all (self->hosts);
  for (guint i = 0; i < placements->len; i++) {
    SkStorePlacement *pl = g_ptr_array_index (placements, i);

    g_hash_table_insert (self->hosts, g_strdup (pl->room), g_strdup (pl->node));
  }

  rooms = manager_rooms (self);
  for (guint i = 0; i < rooms->len; i++) {
    SkRoom *room = g_ptr_array_index (rooms, i);

    if (room->remote && !room->finished)
      room_follow_host (room, manager_find_placement (placements, room->name));
    else if (room->placed && !room->rebuilding && !room->lost)
      room_check_remote_participants (room);
  }

  for (guint i = 0; i < placements->len; i++) {
    SkStorePlacement *pl = g_ptr_array_index (placements, i);
    OrphanSighting *sighting;
    gint64 waited_ms;

    /* Handed to us by a draining node: ours to rebuild at once. */
    if (strcmp (pl->node, self->config->node_id) == 0
        && pl->incarnation == sk_cluster_get_incarnation (cluster)
        && !g_hash_table_contains (self->rooms, pl->room)
        && !g_hash_table_contains (self->releasing, pl->room)) {
      g_message ("room %s: handed over to this node; rebuilding it", pl->room);
      sk_room_new (self, pl->room)->adopted = TRUE;
      continue;
    }

    if (g_hash_table_contains (self->rooms, pl->room)
        || sk_cluster_get_liveness (cluster, pl->node, pl->incarnation) != SK_NODE_DEAD) {
      g_hash_table_remove (self->orphan_seen, pl->room);
      continue;
    }
    sighting = g_hash_table_lookup (self->orphan_seen, pl->room);
    if (sighting == NULL) {
      sighting = g_new0 (OrphanSighting, 1);
      sighting->first_seen_us = now_us;
      g_hash_table_insert (self->orphan_seen, g_strdup (pl->room), sighting);
    }
    sighting->views++;
    waited_ms = (now_us - sighting->first_seen_us) / 1000;
    /* The next view must come when the wait is over, whatever else happens meanwhile. */
    if (waited_ms < ORPHAN_DEFER_MS && self->orphan_view_id == 0)
      self->orphan_view_id = g_timeout_add (ORPHAN_DEFER_MS - waited_ms + 1, on_orphan_view, self);
    /* A full node leaves its first choices to the others, unless nobody takes them. */
    if ((sighting->views > ORPHAN_PATIENCE_VIEWS && waited_ms >= ORPHAN_PATIENCE_MS)
        || (waited_ms >= ORPHAN_DEFER_MS && !manager_is_full (self, NULL)
            && manager_is_first_choice (self, pl->room))) {
      SkRoom *room;

      g_message ("room %s: host %s (incarnation %" G_GUINT64_FORMAT ") is dead; claiming it",
                 pl->room, pl->node, pl->incarnation);
      g_hash_table_remove (self->orphan_seen, pl->room);
      SK_TIMING ("room %s: claiming from dead host %s", pl->room, pl->node);
      room = sk_room_new (self, pl->room);
      room->adopted = TRUE;
    }
  }
}

static void
on_cluster_fenced (SkCluster *cluster, gpointer user_data)
{
  SkRoomManager *self = user_data;
  g_autoptr (GPtrArray) rooms = manager_rooms (self);
  g_autoptr (GError) error
      = g_error_new (SK_ERROR, SK_ERROR_STALE_EPOCH, "this node was declared dead (fenced)");

  /* Survivors own these rooms and their logs now: drop them without a word. */
  for (guint i = 0; i < rooms->len; i++)
    sk_room_lost (g_ptr_array_index (rooms, i), error);
}

guint
sk_room_manager_get_n_hosted (SkRoomManager *self)
{
  return manager_n_hosted (self, NULL);
}

SkCluster *
sk_room_manager_get_cluster (SkRoomManager *self)
{
  return self->cluster;
}

void
sk_room_manager_set_cluster (SkRoomManager *self, SkCluster *cluster)
{
  static const SkClusterCallbacks callbacks = {
    .fenced = on_cluster_fenced,
    .view = on_cluster_view,
  };

  self->cluster = cluster;
  sk_cluster_add_callbacks (cluster, &callbacks, self);
}

/* ---- drain: hand every hosted room to another node --------------------------------------- */

typedef struct {
  SkRoomManager *manager;
  char *room;
  char *node;
  guint64 incarnation;
} HandOver;

static void
hand_over_free (HandOver *ho)
{
  g_free (ho->room);
  g_free (ho->node);
  g_free (ho);
}

static void
drain_step_done (SkRoomManager *self)
{
  if (--self->drain_pending > 0 || self->drain_task == NULL)
    return;
  g_task_return_boolean (self->drain_task, TRUE);
  g_clear_object (&self->drain_task);
}

/* Runs on the manager's cancellable, not the room's: every hand-over is answered (and counted)
 * while the manager lives, even if its room went away meanwhile. */
static void
on_handed_over (GObject *source, GAsyncResult *result, gpointer user_data)
{
  HandOver *ho = user_data;
  g_autoptr (GError) error = NULL;
  SkRoomManager *self = ho->manager;
  SkRoom *room;
  guint64 epoch = 0;

  if (sk_rooms_store_op_cancelled (result)) {
    hand_over_free (ho);
    return;
  }
  room = g_hash_table_lookup (self->rooms, ho->room);
  if (sk_store_claim_room_finish (self->store, result, &epoch, &error)) {
    /* The new host rebuilds it from the store; our participants now publish there and
     * leave through it when their sessions close. */
    if (room != NULL && !room->remote && !room->lost)
      sk_room_become_proxy (room, ho->node, ho->incarnation, epoch);
    self->drain_moved++;
  } else {
    g_warning ("room %s: cannot hand it over to %s: %s; it ends here", ho->room, ho->node,
               error->message);
  }
  hand_over_free (ho);
  drain_step_done (self);
}

void
sk_room_manager_drain_async (SkRoomManager *self, GAsyncReadyCallback callback, gpointer user_data)
{
  g_autoptr (GPtrArray) rooms = manager_rooms (self);
  g_autoptr (GPtrArray) live = NULL;
  GTask *task = g_task_new (NULL, NULL, callback, user_data);

  g_task_set_source_tag (task, sk_room_manager_drain_async);
  if (self->cluster == NULL || self->drain_task != NULL) {
    g_task_return_boolean (task, TRUE);
    g_object_unref (task);
    return;
  }
  live = sk_cluster_get_live_nodes (self->cluster);
  self->drain_task = task;
  self->drain_pending = 1;
  for (guint i = 0; i < rooms->len && live->len > 0; i++) {
    SkRoom *room = g_ptr_array_index (rooms, i);
    const char *target;
    guint64 incarnation = 0;
    HandOver *ho;

    if (!room->placed || room->remote || room->finished || room->lost || room->rebuilding)
      continue;
    /* A node with room to spare; over capacity rather than ending the room; any live node
     * rather than none (a draining one would hand it on again). */
    target = manager_pick_host (self, room->name, TRUE, &incarnation);
    if (target == NULL)
      target = manager_pick_host (self, room->name, FALSE, &incarnation);
    if (target == NULL) {
      target = g_ptr_array_index (live, g_str_hash (room->name) % live->len);
      incarnation = sk_cluster_get_live_incarnation (self->cluster, target);
    }
    /* The load counted for the next room includes this one. */
    g_hash_table_insert (self->hosts, g_strdup (room->name), g_strdup (target));
    ho = g_new0 (HandOver, 1);
    ho->manager = self;
    ho->room = g_strdup (room->name);
    ho->node = g_strdup (target);
    ho->incarnation = incarnation;
    g_message ("room %s: handing it over to node %s (drain)", room->name, target);
    self->drain_pending++;
    sk_store_claim_room_async (self->store, room->name, target, ho->incarnation, room->epoch,
                               self->cancellable, on_handed_over, ho);
  }
  drain_step_done (self);
}

gboolean
sk_room_manager_drain_finish (SkRoomManager *self, GAsyncResult *result, guint *n_moved,
                              GError **error)
{
  g_return_val_if_fail (g_async_result_is_tagged (result, sk_room_manager_drain_async), FALSE);
  if (n_moved != NULL)
    *n_moved = self->drain_moved;
  return g_task_propagate_boolean (G_TASK (result), error);
}
