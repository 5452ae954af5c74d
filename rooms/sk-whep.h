/*
 * streamkeeper: WHEP playback (draft-ietf-wish-whep). Internal to rooms/: the room manager
 * owns one SkWhepServer and routes requests to it.
 *
 *   POST   /v1/rooms/{room}/whep   SDP offer → 201 + answer (all candidates), Location, ETag
 *   OPTIONS on both                CORS preflight
 *   DELETE /v1/whep/{id}           ends the subscriber
 *   PATCH  /v1/whep/{id}           trickle / ICE restart (application/trickle-ice-sdpfrag)
 *
 * Each subscriber is its own pipeline: send pad → payloader → webrtcbin (sendonly), pushed into
 * by sk_track sinks on the track's thread once DTLS is up; nothing on that path blocks, so one
 * slow subscriber never stalls a track or another subscriber.
 */
#pragma once

#include <libsoup/soup.h>

#include "rooms/sk-rooms.h"

G_BEGIN_DECLS

typedef struct _SkWhepServer SkWhepServer;

SkWhepServer *sk_whep_server_new (SkRoomManager *rooms, const SkConfig *config);
/* Closes every subscriber. */
void sk_whep_server_free (SkWhepServer *self);

/* Registers /v1/whep/ (resources) on @server. */
void sk_whep_server_attach_http (SkWhepServer *self, SoupServer *server);

/* POST/OPTIONS of /v1/rooms/{room}/whep, routed here by the room manager's handler.
 * Optional query `participant=IDENTITY` picks a publisher; default: the newest. */
void sk_whep_server_handle_offer (SkWhepServer *self, SoupServerMessage *msg, const char *room);

guint sk_whep_server_get_n_subscribers (SkWhepServer *self);

G_END_DECLS
