/*
 * streamkeeper: the cluster's internal publish endpoint, the host's side of "room on another
 * node" (the ingress node's side is rooms/sk-remote.c; the HTTP contract is in sk-remote.h).
 *
 *   POST   /internal/v1/rooms/{room}/publish   Bearer <cluster secret>, SDP offer,
 *                                              X-Streamkeeper-Participant
 *          → 201 + answer, Location: /internal/v1/publications/{id}
 *   DELETE /internal/v1/publications/{id}      X-Streamkeeper-Reason (default client_initiated)
 *
 * A publication is one remote participant of a room hosted here, with its media session.
 * The participant joins with the ingress node's sids; its media is received like a WHIP
 * publisher's (sk-whip-session.c). A session that dies without DELETE (ICE/DTLS failure, no
 * media for publisher_timeout_ms) only detaches the media: the participant stays, with its
 * tracks, until its ingress node publishes again (a new POST with the same participant sid
 * replaces the media without events), DELETEs it, or the cluster declares that node dead
 * (sk_whip_internal_end_node). Main context only.
 */
#pragma once

#include <libsoup/soup.h>

#include "common/sk-config.h"
#include "rooms/sk-rooms.h"

G_BEGIN_DECLS

#define SK_WHIP_INTERNAL_PREFIX "/internal/v1"

typedef struct _SkWhipInternal SkWhipInternal;

SkWhipInternal *sk_whip_internal_new (const SkConfig *config, SkRoomManager *rooms);
/* Drops every media session; the participants are left to the room manager. Free it after
 * sk_room_manager_shutdown_async finished, or right before sk_room_manager_free (the room
 * manager must not evict a participant of ours once we are gone). */
void sk_whip_internal_free (SkWhipInternal *self);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (SkWhipInternal, sk_whip_internal_free)

/* Registers /internal/v1/… on @server. */
void sk_whip_internal_attach_http (SkWhipInternal *self, SoupServer *server);

/* Remote participants known here, attached or not, and those with a live media session. */
guint sk_whip_internal_get_n_publications (SkWhipInternal *self);
guint sk_whip_internal_get_n_attached (SkWhipInternal *self);

/* Cluster hook: the ingress node @node_id is dead. Every participant it published here
 * leaves with @reason (node_failure): TrackUnpublished ×n, ParticipantDisconnected.
 * Returns how many left. */
guint sk_whip_internal_end_node (SkWhipInternal *self, const char *node_id, const char *reason);

/* Drops every media session silently (this node is fenced / gives its rooms away); the
 * participants stay for whoever hosts the rooms next. */
void sk_whip_internal_detach_all (SkWhipInternal *self);

G_END_DECLS
