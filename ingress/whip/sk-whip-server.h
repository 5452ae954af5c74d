/*
 * streamkeeper: WHIP ingest (RFC 9725), the HTTP side.
 *
 *   POST    /whip                 Authorization: Bearer <stream key>, application/sdp offer
 *   POST    /whip/{stream_key}    the same, key in the path
 *           → 201 + SDP answer (every local candidate), Location, ETag, Link (ice-server)
 *   OPTIONS on both               CORS preflight, Accept-Post: application/sdp
 *   PATCH   /whip/session/{id}    application/trickle-ice-sdpfrag: trickle (204) or ICE
 *                                 restart with If-Match: "*" (200 + new credentials, new ETag)
 *   DELETE  /whip/session/{id}    ends the session (participant leaves client_initiated)
 *
 * Errors are RFC 9457 problem bodies (application/problem+json) that also carry the API's
 * {error, code} members. Each session feeds one ingress session of the registry.
 */
#pragma once

#include <libsoup/soup.h>

#include "common/sk-config.h"
#include "ingress/sk-ingress.h"
#include "ingress/whip/sk-whip-internal.h"

G_BEGIN_DECLS

typedef struct _SkWhipServer SkWhipServer;

SkWhipServer *sk_whip_server_new (const SkConfig *config, SkIngressRegistry *registry);
/* Ends every session (server_shutdown) and frees the server. */
void sk_whip_server_free (SkWhipServer *self);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (SkWhipServer, sk_whip_server_free)

/* Registers /whip on @server, and /internal/v1/… once the internal endpoint is enabled. */
void sk_whip_server_attach_http (SkWhipServer *self, SoupServer *server);

/* Serves the cluster's internal publish endpoint (sk-whip-internal.h) for rooms of @rooms.
 * Call before attach_http. */
void sk_whip_server_enable_internal (SkWhipServer *self, SkRoomManager *rooms);
/* NULL until enabled; for the cluster's hooks (sk_whip_internal_end_node, …). */
SkWhipInternal *sk_whip_server_get_internal (SkWhipServer *self);

guint sk_whip_server_get_n_sessions (SkWhipServer *self);

G_END_DECLS
