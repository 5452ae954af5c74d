/*
 * streamkeeper: what the rooms files share (sk-rooms.c: rooms, participants and their event
 * log; sk-room-placement.c: where a room is hosted, proxy, takeover, drain; sk-rooms-http.c:
 * /v1/rooms). Not an interface: only those three include it.
 */
#pragma once

#include "rooms/sk-rooms.h"

#include "common/sk-common.h"
#include "failover/sk-cluster.h"
#include "rooms/sk-events-http.h"
#include "rooms/sk-remote.h"
#include "rooms/sk-whep.h"

G_BEGIN_DECLS

#define ROOM_NAME_MAX 128
#define SK_ROOMS_NS "rooms"

typedef struct _SkRoom SkRoom;

/* An event waiting for its turn to be appended. */
typedef struct {
  JsonObject *event;   /* complete but for "seq" */
  const char *webhook; /* LiveKit webhook name, or NULL */
  guint64 seq;         /* assigned when sent */
  guint retries;
} PendingEvent;

struct _SkParticipant {
  SkRoom *room;
  char *sid;
  char *identity;
  char *name;
  char *kind;
  char *ingress_node;          /* where its media comes from (this node, or a remote publisher's) */
  guint64 ingress_incarnation; /* of that node when the participant joined; 0 = unknown */
  GPtrArray *tracks;           /* SkTrack*, owned, in publish order */
  SkRemotePublication *publication; /* room hosted elsewhere: our media goes there */
  guint expected_tracks;            /* announced by the publisher; 0 = unknown */
  SkParticipantEvictedFunc evicted;
  gpointer user_data;
  gboolean departed; /* left the room; only the evicted callback still sees it */
};

struct _SkRoom {
  SkRoomManager *manager;
  char *name;
  GCancellable *cancellable; /* every store call of this room: cancelled when it is freed */
  GPtrArray *participants;   /* SkParticipant*, owned, in join order */
  gboolean finished;         /* RoomFinished queued: lingers until its appends are done */
  guint empty_timeout_id;

  /* Log writing. */
  gboolean fresh;  /* not started yet: RoomStarted goes first once placed */
  gboolean placed; /* epoch claimed and last_seq known: appends may go */
  char *prev_node; /* placement found before our claim: a dead host's room is rebuilt */
  guint64 prev_incarnation;
  guint64 prev_epoch;
  gboolean rebuilding; /* takeover: appends wait until the state is rebuilt */
  gboolean lost;       /* another node holds it now: nothing more is written */
  gboolean adopted;    /* claimed from a dead node by this one, with no participant here */

  /* Hosted on another node (proxy): our participants publish there, the host writes. */
  gboolean remote;
  char *host_node;
  guint64 host_incarnation;
  guint64 host_epoch;
  guint done_idle_id;
  gboolean snapshot_in_flight;
  gboolean snapshot_dirty;
  guint place_attempts;
  guint64 epoch;
  guint64 last_seq; /* of the newest event the store acknowledged */
  GQueue pending;   /* PendingEvent* */
  PendingEvent *in_flight;
  guint retry_id;
};

typedef struct {
  guint id;
  char *room;
  SkRoomTrackFunc func;
  gpointer user_data;
  GDestroyNotify destroy;
} TrackWatch;

struct _SkRoomManager {
  const SkConfig *config;
  SkStore *store;
  SkWebhooks *webhooks; /* may be NULL */
  GCancellable *cancellable;
  GHashTable *rooms;         /* name → SkRoom */
  GHashTable *track_watches; /* id → TrackWatch */
  guint next_watch_id;
  SkWhepServer *whep;
  SkEventsHttp *events;
  GTask *shutdown_task;
  gboolean shutting_down;

  SkCluster *cluster;    /* NULL: a node on its own */
  GHashTable *hosts;     /* room → host node id, as of the cluster's last view */
  GHashTable *releasing; /* rooms whose placement this node is giving up right now */
  GTask *drain_task;
  guint drain_pending;
  guint drain_moved;
  GHashTable *orphan_seen; /* room → OrphanSighting: since when and in how many views */
  guint orphan_view_id;    /* the deferred view (ORPHAN_DEFER_MS) */
};

/* sk-rooms.c: rooms, participants, the event log */
gboolean sk_room_name_is_valid (const char *name);
gboolean sk_rooms_store_op_cancelled (GAsyncResult *result);
JsonObject *sk_rooms_track_to_json (SkTrack *track);
void sk_rooms_pending_event_free (PendingEvent *pe);
SkRoom *sk_room_new (SkRoomManager *self, const char *name);
void sk_room_dispose (SkRoom *room);
void sk_room_lost (SkRoom *room, const GError *error);
void sk_room_retry_later (SkRoom *room);
SkParticipant *sk_room_find_participant (SkRoom *room, const char *sid);
JsonObject *sk_room_event_new (SkRoom *room, const char *type);
void sk_room_enqueue (SkRoom *room, JsonObject *event, const char *webhook);
void sk_room_pump (SkRoom *room);
JsonObject *sk_participant_to_json (SkParticipant *p);
JsonObject *sk_participant_event_new (SkParticipant *p, const char *type);
SkParticipant *sk_participant_new (SkRoom *room, const char *sid, const char *identity,
                                   const char *name, const char *kind, const char *ingress_node);
void sk_participant_evict (SkParticipant *p, const char *reason);
JsonNode *sk_room_to_json (SkRoom *room, gboolean snapshot); /* snapshot: the store's form */

/* sk-room-placement.c: where a room is hosted */
guint64 sk_room_manager_incarnation (SkRoomManager *self);
void sk_room_place (SkRoom *room);
void sk_room_become_proxy (SkRoom *room, const char *node, guint64 incarnation, guint64 epoch);
void sk_participant_start_remote (SkParticipant *p);

G_END_DECLS
