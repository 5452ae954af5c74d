/*
 * streamkeeper: one WHIP publisher's media — webrtcbin (recvonly) → depayloader (→ h264parse)
 * → appsink → the ingress session's tracks. Internal to ingress/whip/.
 *
 * Created from a validated offer; answers once ICE gathering is complete. Tracks are
 * published on the main context when their first buffer arrives; buffers carry PTS in the
 * pipeline's running time. All callbacks run on the main context the session was made on.
 */
#pragma once

#include "common/sk-config.h"
#include "ingress/sk-ingress.h"
#include "ingress/whip/sk-whip-offer.h"

G_BEGIN_DECLS

typedef struct _SkWhipSession SkWhipSession;

typedef struct {
  /* The answer is ready (@sdp, all candidates) or could not be made (@sdp NULL, @message). */
  void (*answered) (SkWhipSession *session, const char *sdp, const char *message,
                    gpointer user_data);
  /* After the answer: the peer connection failed or the pipeline stopped. */
  void (*failed) (SkWhipSession *session, const char *message, gpointer user_data);
} SkWhipSessionCallbacks;

/* @ingress: borrowed; must outlive the session (free the session before ending it). */
SkWhipSession *sk_whip_session_new (const char *name, const SkWhipOffer *offer,
                                    SkIngressSession *ingress, const SkConfig *config,
                                    const SkWhipSessionCallbacks *callbacks, gpointer user_data,
                                    GError **error);

/* A trickled candidate line ("candidate:…") for m-line @mline. */
void sk_whip_session_add_candidate (SkWhipSession *session, guint mline, const char *candidate);

/*
 * ICE restart (RFC 9725 §4.4.2) with the publisher's new @ufrag/@pwd: restarts the bundle's
 * ICE stream under webrtcbin (sk_webrtc_ice_restart) and returns the new local credentials and
 * candidate lines (g_free them). Trickle the publisher's new candidates afterwards. On failure
 * nothing was changed unless libnice itself failed halfway (SK_ERROR_INTERNAL).
 */
gboolean sk_whip_session_restart_ice (SkWhipSession *session, const char *ufrag, const char *pwd,
                                      char **local_ufrag, char **local_pwd, char **local_candidates,
                                      GError **error);

/* Stops the pipeline (synchronously) and frees the session; no callback runs afterwards. */
void sk_whip_session_free (SkWhipSession *session);

G_END_DECLS
