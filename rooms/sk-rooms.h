/*
 * streamkeeper: rooms hosted on this node.
 *
 * A room starts with its first participant and finishes after the last one leaves (after
 * room_empty_timeout_ms). Everything that happens is appended to the room's ordered event
 * log in the state store, which serves SSE streams and webhooks. All functions here run on
 * the daemon's main context, except sk_track_push on the tracks they hand out.
 */
#pragma once

#include <libsoup/soup.h>
#include <json-glib/json-glib.h>

#include "common/sk-config.h"
#include "failover/sk-cluster.h"
#include "failover/sk-store.h"
#include "rooms/sk-track.h"
#include "rooms/sk-webhooks.h"

G_BEGIN_DECLS

typedef struct _SkRoomManager SkRoomManager;
typedef struct _SkParticipant SkParticipant;

/* Reasons for leaving, as written in events (DESIGN.md). */
#define SK_REASON_CLIENT_INITIATED "client_initiated"
#define SK_REASON_PUBLISHER_LOST "publisher_lost"
#define SK_REASON_NODE_FAILURE "node_failure"
#define SK_REASON_REPLACED "replaced"
#define SK_REASON_INGRESS_DELETED "ingress_deleted"
#define SK_REASON_SERVER_SHUTDOWN "server_shutdown"
#define SK_REASON_DRAIN "drain" /* RoomMoved only: the host handed the room over */

SkRoomManager *sk_room_manager_new (const SkConfig *config, SkStore *store, SkWebhooks *webhooks,
                                    GError **error);
void sk_room_manager_free (SkRoomManager *self);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (SkRoomManager, sk_room_manager_free)

/* Cluster mode: rooms of dead nodes are claimed and rebuilt here, participants whose ingress
 * node died leave with node_failure, and a fenced node drops its rooms without events. */
void sk_room_manager_set_cluster (SkRoomManager *self, SkCluster *cluster);
SkCluster *sk_room_manager_get_cluster (SkRoomManager *self); /* NULL on a node on its own */
/* Rooms this node hosts (for its lease info and its max_rooms). */
guint sk_room_manager_get_n_hosted (SkRoomManager *self);

/*
 * Drain: every room hosted here is handed to another live node (compare-and-set of its
 * placement onto that node, which rebuilds it and writes RoomMoved with reason "drain"); our
 * participants keep publishing into it from here until their sessions close. Completes once
 * every hand-over was answered; rooms that could not be handed over stay here.
 */
void sk_room_manager_drain_async (SkRoomManager *self, GAsyncReadyCallback callback,
                                  gpointer user_data);
gboolean sk_room_manager_drain_finish (SkRoomManager *self, GAsyncResult *result, guint *n_moved,
                                       GError **error);

/* Registers /v1/rooms, /v1/rooms/{room}, /v1/rooms/{room}/events (SSE) and
 * /v1/rooms/{room}/whep (+ the WHEP resources) on @server. */
void sk_room_manager_attach_http (SkRoomManager *self, SoupServer *server);

/* Every participant leaves with server_shutdown; their events are appended before
 * @callback runs (so the daemon can exit only after the log is complete). */
void sk_room_manager_shutdown_async (SkRoomManager *self, GAsyncReadyCallback callback,
                                     gpointer user_data);
gboolean sk_room_manager_shutdown_finish (SkRoomManager *self, GAsyncResult *result,
                                          GError **error);

/* The room manager removed a participant on its own (duplicate identity → "replaced"):
 * the owner must stop feeding it. The participant is freed after this returns. */
typedef void (*SkParticipantEvictedFunc) (SkParticipant *participant, const char *reason,
                                          gpointer user_data);

/*
 * Joins a participant to @room (creating the room), appending ParticipantConnected.
 * If a participant with the same identity is connected, it is evicted first with
 * reason "replaced" (invariant 4 of DESIGN.md).
 * @kind: "ingress" for publishers from RTMP/WHIP.
 */
SkParticipant *sk_room_manager_join (SkRoomManager *self, const char *room, const char *identity,
                                     const char *name, const char *kind,
                                     SkParticipantEvictedFunc evicted, gpointer user_data,
                                     GError **error);

const char *sk_participant_get_sid (SkParticipant *participant);
const char *sk_participant_get_room (SkParticipant *participant);

/* Publishes a track (appends TrackPublished) and returns it (borrowed; valid until it is
 * unpublished or the participant leaves; take a ref to keep it longer). */
SkTrack *sk_participant_publish_track (SkParticipant *participant, SkTrackKind kind, GstCaps *caps);

/* The publisher will publish @n_tracks tracks, within moments of each other: a publication
 * to a room hosted on another node starts once it has them all (or after a short wait),
 * rather than once per track. */
void sk_participant_expect_tracks (SkParticipant *participant, guint n_tracks);

const char *sk_participant_get_identity (SkParticipant *participant);

/* Appends TrackUnpublished and ends the track. */
void sk_participant_unpublish_track (SkParticipant *participant, SkTrack *track,
                                     const char *reason);

/* Unpublishes every remaining track (TrackUnpublished each), then ParticipantDisconnected
 * with @reason; frees @participant. */
void sk_participant_leave (SkParticipant *participant, const char *reason);

/*
 * Follows the tracks of @room: @func runs at once for every track already published
 * (published = TRUE), then for each later publish/unpublish, on the main context.
 * Used by WHEP subscribers to bind to the room's current publisher and follow it across
 * reconnects.
 */
typedef void (*SkRoomTrackFunc) (const char *room, SkParticipant *participant, SkTrack *track,
                                 gboolean published, gpointer user_data);
guint sk_room_manager_watch_tracks (SkRoomManager *self, const char *room, SkRoomTrackFunc func,
                                    gpointer user_data, GDestroyNotify destroy);
void sk_room_manager_unwatch_tracks (SkRoomManager *self, guint watch_id);

const SkConfig *sk_room_manager_get_config (SkRoomManager *self);

/*
 * Cluster: participants whose ingress runs on another node. That node publishes their tracks
 * to this one (the room's host) over WebRTC and keeps their sids across hosts, so a room rebuilt
 * here after its host died finds them again. A @sid the room already knows (it was rebuilt
 * here from the store) is re-attached without events; a new one is joined like
 * sk_room_manager_join (ParticipantConnected, identity replacement). Fails with
 * SK_ERROR_UNAVAILABLE if this node does not host @room (the caller should look up the host).
 */
SkParticipant *sk_room_manager_join_remote (SkRoomManager *self, const char *room, const char *sid,
                                            const char *identity, const char *name,
                                            const char *kind, const char *ingress_node,
                                            SkParticipantEvictedFunc evicted, gpointer user_data,
                                            GError **error);

/* Like sk_participant_publish_track with the sid chosen by the ingress node; a sid the
 * participant already had (re-attached after a move) is re-bound without TrackPublished. */
SkTrack *sk_participant_publish_track_with_sid (SkParticipant *participant, const char *sid,
                                                SkTrackKind kind, GstCaps *caps);

G_END_DECLS
