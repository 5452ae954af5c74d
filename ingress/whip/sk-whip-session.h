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

/* Stops the pipeline (synchronously) and frees the session; no callback runs afterwards. */
void sk_whip_session_free (SkWhipSession *session);

G_END_DECLS
