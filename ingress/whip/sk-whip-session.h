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

/*
 * Where a session's media goes: an ingress session (public WHIP), or a remote participant
 * (the cluster's internal endpoint, sk-whip-internal.c). Main context; @data borrowed, it must
 * outlive the session.
 */
typedef struct {
  /* The first buffer of @kind arrived: the track to push into (borrowed), or NULL + error. */
  SkTrack *(*publish_track) (gpointer data, SkTrackKind kind, GstCaps *caps, GError **error);
  /* Every track of the offer is flowing. */
  void (*publishing) (gpointer data);
  /* Media arrived since the last call (about every 250 ms while it flows). */
  void (*media_received) (gpointer data);
  /* Input figures (optional). */
  void (*input_info) (gpointer data, const SkInputInfo *info);
  /* Decode and re-encode the video (transcode: always); optional, default passthrough. */
  gboolean (*transcode_video) (gpointer data);
} SkWhipSessionTarget;

/* Like sk_whip_session_new with any target. @base_time: GST_CLOCK_TIME_NONE, or the base
 * time of an earlier session of the same publisher, so the PTS its tracks carry go on from
 * where that one stopped (the pipelines share the system clock). */
SkWhipSession *sk_whip_session_new_for_target (const char *name, const SkWhipOffer *offer,
                                               const SkWhipSessionTarget *target, gpointer data,
                                               GstClockTime base_time, const SkConfig *config,
                                               const SkWhipSessionCallbacks *callbacks,
                                               gpointer user_data, GError **error);

/* The base time of the session's pipeline (system clock). */
GstClockTime sk_whip_session_get_base_time (SkWhipSession *session);

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
