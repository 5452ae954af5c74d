/*
 * streamkeeper: reading and validating a WHIP SDP offer (RFC 9725 §4.2, untrusted input).
 *
 * No sockets and no pipelines: the fuzz target and the unit tests link this alone (with
 * rooms/sk-webrtc.c for the SDP syntax checks).
 */
#pragma once

#include <gst/sdp/sdp.h>

G_BEGIN_DECLS

/* The largest offer we read; a browser's is a few KiB. */
#define SK_WHIP_MAX_OFFER_BYTES (64 * 1024)

typedef enum {
  SK_WHIP_CODEC_NONE,
  SK_WHIP_CODEC_H264,
  SK_WHIP_CODEC_VP8,
  SK_WHIP_CODEC_OPUS,
} SkWhipCodec;

const char *sk_whip_codec_to_string (SkWhipCodec codec); /* "H264", "VP8", "opus", "none" */

/* The one m-line of a kind we receive. */
typedef struct {
  int mline; /* index in the offer; -1: the offer has no such track */
  guint pt;
  SkWhipCodec codec;
  char *mid; /* NULL if the offer has none */
} SkWhipOfferMedia;

typedef struct {
  GstSDPMessage *sdp;
  SkWhipOfferMedia video, audio;
  char *ice_ufrag, *ice_pwd; /* of the first m-line (max-bundle: one transport) */
  guint n_candidates;        /* a=candidate lines; 0 is fine (OBS 30.2+, prflx) */
} SkWhipOffer;

/*
 * Parses and checks @text. Errors (SK_ERROR):
 *   SK_ERROR_TOO_LARGE   over SK_WHIP_MAX_OFFER_BYTES (413)
 *   SK_ERROR_INVALID     not SDP at all (400)
 *   SK_ERROR_UNSUPPORTED SDP we understand but refuse: no media, recvonly/inactive, two tracks
 *                        of a kind, no codec we accept, no ICE credentials or fingerprint (422)
 * The message says what is wrong, for the problem body.
 */
SkWhipOffer *sk_whip_offer_parse (const char *text, gsize len, GError **error);
void sk_whip_offer_free (SkWhipOffer *offer);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (SkWhipOffer, sk_whip_offer_free)

/* The RTP caps of the chosen payload type of @media (application/x-rtp, for the transceiver's
 * codec preferences), or NULL. */
GstCaps *sk_whip_offer_get_caps (const SkWhipOffer *offer, const SkWhipOfferMedia *media);

G_END_DECLS
