/*
 * streamkeeper: remote publication, the ingress node's side of "room on another node".
 *
 * One SkRemotePublication carries one participant's tracks from the node running its ingress
 * to the node hosting its room, over WebRTC: an in-process WHIP client (webrtcbin sendonly)
 * that POSTs to the host's internal endpoint, authenticated with the cluster secret. The
 * participant and track sids travel with it, so the host writes events under the ingress
 * node's sids and a new host after a move finds the same ones. Runs on the main context; media
 * comes from the tracks' sinks (any thread).
 *
 * Internal endpoint (served by ingress/whip on every node):
 *   POST {host_url}/internal/v1/rooms/{room}/publish
 *     Authorization: Bearer <cluster secret>
 *     Content-Type: application/sdp
 *     X-Streamkeeper-Participant: {"sid","identity","name","kind","ingress_node",
 *                                  "tracks":[{"sid","kind"}…]}   (m-lines in the same order)
 *   → 201, answer, Location: /internal/v1/publications/{id}
 *   DELETE {Location}   X-Streamkeeper-Reason: client_initiated|publisher_lost|…
 *     → the host unpublishes the tracks and the participant leaves with that reason.
 *   A session dropped without DELETE (host or ingress node died, retarget) writes nothing.
 */
#pragma once

#include "common/sk-config.h"
#include "rooms/sk-track.h"

G_BEGIN_DECLS

typedef struct _SkRemotePublication SkRemotePublication;

typedef enum {
  SK_REMOTE_CONNECTING, /* POST sent / ICE+DTLS in progress */
  SK_REMOTE_PUBLISHING, /* media flowing to the host */
  SK_REMOTE_FAILED,     /* the host refused or the connection failed; retried on set_target */
} SkRemoteState;

typedef void (*SkRemoteStateFunc) (SkRemotePublication *publication, SkRemoteState state,
                                   const GError *error, gpointer user_data);

/* @participant_json: {"sid","identity","name","kind","ingress_node"} (tracks are added below). */
SkRemotePublication *sk_remote_publication_new (const SkConfig *config, const char *room,
                                                const char *participant_json,
                                                SkRemoteStateFunc state_func, gpointer user_data);
void sk_remote_publication_free (SkRemotePublication *publication);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (SkRemotePublication, sk_remote_publication_free)

/* Tracks may come and go at any time; a change renegotiates (or re-POSTs) the session. The
 * publication takes a ref on @track. Video starts from the track's cached GOP. */
void sk_remote_publication_add_track (SkRemotePublication *publication, SkTrack *track);

/* The owner will add @n_tracks tracks in all: the first session waits for them (at most
 * SK_REMOTE_TRACK_WAIT_MS) instead of being replaced when the next one comes. */
void sk_remote_publication_expect_tracks (SkRemotePublication *publication, guint n_tracks);
void sk_remote_publication_remove_track (SkRemotePublication *publication, SkTrack *track);

/* (Re)publishes to the host at @host_url (its advertise_url). A new target drops the old
 * session without events (the room moved) and starts a new one with the same sids. */
void sk_remote_publication_set_target (SkRemotePublication *publication, const char *host_url);

/* The participant leaves for good: DELETE with @reason, then the publication stops. */
void sk_remote_publication_end (SkRemotePublication *publication, const char *reason);

G_END_DECLS
