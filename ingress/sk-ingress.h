/*
 * streamkeeper: the ingress registry — ingress records (the API's /v1/ingress), stream keys,
 * and the publishing sessions of the protocol front ends (RTMP now, WHIP later).
 *
 * A session: front end authenticates a stream key → sk_ingress_registry_start_session →
 * media via sk_ingress_session_push_flv_tag → sk_ingress_session_end when the transport goes.
 * The registry drives the LiveKit state machine (ENDPOINT_INACTIVE → BUFFERING → PUBLISHING →
 * INACTIVE/ERROR/COMPLETE), the participant in the room and the pipeline.
 * Everything runs on the daemon's main context.
 */
#pragma once

#include <libsoup/soup.h>

#include "common/sk-config.h"
#include "pipelines/sk-pipeline.h"
#include "failover/sk-store.h"
#include "rooms/sk-rooms.h"
#include "rooms/sk-webhooks.h"

G_BEGIN_DECLS

typedef enum {
  SK_INPUT_RTMP,
  SK_INPUT_WHIP,
} SkInputType;

typedef struct _SkIngressRegistry SkIngressRegistry;
typedef struct _SkIngressSession SkIngressSession;

SkIngressRegistry *sk_ingress_registry_new (const SkConfig *config, SkStore *store,
                                            SkRoomManager *rooms, SkWebhooks *webhooks);
void sk_ingress_registry_free (SkIngressRegistry *self);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (SkIngressRegistry, sk_ingress_registry_free)

/* Registers /v1/ingress and /v1/ingress/{id} on @server. */
void sk_ingress_registry_attach_http (SkIngressRegistry *self, SoupServer *server);

/* Sessions being published right now (for /readyz capacity and shutdown). */
guint sk_ingress_registry_get_n_sessions (SkIngressRegistry *self);

/* Ends every session with @reason (server_shutdown). */
void sk_ingress_registry_close_all (SkIngressRegistry *self, const char *reason);

/* While not accepting (draining, fenced), start_session fails with SK_ERROR_UNAVAILABLE.
 * A new registry accepts. */
void sk_ingress_registry_set_accepting (SkIngressRegistry *self, gboolean accepting);
/* TRUE while accepting and below max_streams: what /readyz reports. */
gboolean sk_ingress_registry_is_ready (SkIngressRegistry *self);

/* The registry asks the front end to drop the transport (replaced, ingress deleted,
 * pipeline error, shutdown). The front end must not call sk_ingress_session_end afterwards:
 * the session is already ended and freed when this runs. */
typedef void (*SkIngressCloseFunc) (gpointer transport, const char *reason);

/*
 * Authenticates @stream_key (constant-time) and starts a session.
 * Errors: SK_ERROR_NOT_FOUND (unknown key: RTMP answers NetStream.Publish.BadName),
 * SK_ERROR_CONFLICT (key live and on_duplicate_key=reject), SK_ERROR_LIMIT (node full),
 * SK_ERROR_UNAVAILABLE (draining). @remote_address is for logs.
 */
SkIngressSession *sk_ingress_registry_start_session (SkIngressRegistry *self, SkInputType type,
                                                     const char *stream_key,
                                                     const char *remote_address,
                                                     SkIngressCloseFunc close_func,
                                                     gpointer transport, GError **error);

const char *sk_ingress_session_get_ingress_id (SkIngressSession *session);

/* One RTMP audio (8) / video (9) / script-data (18) message. FALSE + error: the session is
 * being ended with ENDPOINT_ERROR (the close func will run from an idle). */
gboolean sk_ingress_session_push_flv_tag (SkIngressSession *session, guint8 tag_type,
                                          guint32 timestamp_ms, const guint8 *data, gsize size,
                                          GError **error);

/*
 * Feeding a session with already-encoded tracks (WHIP) instead of FLV tags. Main context only.
 */

/* Checks @stream_key (constant-time) for an ingress of @type that is enabled, without starting
 * anything: lets a front end answer 401 before it looks at a request body. Errors as
 * start_session (SK_ERROR_NOT_FOUND, SK_ERROR_UNAUTHORIZED). */
gboolean sk_ingress_registry_check_key (SkIngressRegistry *self, SkInputType type,
                                        const char *stream_key, GError **error);

/* Called once the registry has read the store's records after the call that asked for it
 * (NULL @error), or with an error if the store did not answer in time. */
typedef void (*SkIngressRefreshFunc) (const GError *error, gpointer user_data);

/* Re-reads every ingress record from the store now, for a front end that got
 * SK_ERROR_NOT_FOUND for a key that may have been created through another node's API less
 * than a periodic refresh ago: @func runs once (never from inside this call), at most
 * @timeout_ms later; then start_session again knows what the store knew. Returns an id for
 * sk_ingress_registry_cancel_refresh (after which @func is not called). */
guint sk_ingress_registry_refresh (SkIngressRegistry *self, guint timeout_ms,
                                   SkIngressRefreshFunc func, gpointer user_data);
void sk_ingress_registry_cancel_refresh (SkIngressRegistry *self, guint id);

/* Publishes a track of @kind with fixed @caps (video/x-h264 byte-stream/au, video/x-vp8,
 * audio/x-opus), joining the room on the first one. Returns the track (borrowed: ref it), or
 * NULL with an error when the session is closing or the room refused the participant (the
 * session is then being ended with ENDPOINT_ERROR). */
SkTrack *sk_ingress_session_publish_track (SkIngressSession *session, SkTrackKind kind,
                                           GstCaps *caps, GError **error);

/* The ingress record's transcode mode when the session started (WHIP applies it itself). */
SkTranscodeMode sk_ingress_session_get_transcode (SkIngressSession *session);

/* Every track the publisher will send is flowing: ENDPOINT_PUBLISHING + ingress_started. */
void sk_ingress_session_set_publishing (SkIngressSession *session);

/* Input figures measured by the front end (copied). */
void sk_ingress_session_set_input_info (SkIngressSession *session, const SkInputInfo *info);

/* Media arrived (resets the publisher timeout that ends the session with publisher_lost). */
void sk_ingress_session_media_received (SkIngressSession *session);

/* The transport is gone: @reason is client_initiated (clean unpublish) or publisher_lost.
 * Frees @session. */
void sk_ingress_session_end (SkIngressSession *session, const char *reason);

G_END_DECLS
