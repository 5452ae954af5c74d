/* streamkeeper: reading and validating a WHIP SDP offer. */
#include "ingress/whip/sk-whip-offer.h"

#include <string.h>

#include "common/sk-common.h"
#include "rooms/sk-webrtc.h"

const char *
sk_whip_codec_to_string (SkWhipCodec codec)
{
  switch (codec) {
    case SK_WHIP_CODEC_H264:
      return "H264";
    case SK_WHIP_CODEC_VP8:
      return "VP8";
    case SK_WHIP_CODEC_OPUS:
      return "opus";
    case SK_WHIP_CODEC_NONE:
    default:
      return "none";
  }
}

void
sk_whip_offer_free (SkWhipOffer *offer)
{
  if (offer == NULL)
    return;
  if (offer->sdp != NULL)
    gst_sdp_message_free (offer->sdp);
  g_free (offer->video.mid);
  g_free (offer->audio.mid);
  g_free (offer->ice_ufrag);
  g_free (offer->ice_pwd);
  g_free (offer);
}

static gboolean
parse_pt (const char *fmt, guint *pt)
{
  char *end = NULL;
  guint64 v;

  if (fmt == NULL || !g_ascii_isdigit (fmt[0]))
    return FALSE;
  v = g_ascii_strtoull (fmt, &end, 10);
  if (*end != '\0' || v > 127)
    return FALSE;
  *pt = (guint)v;
  return TRUE;
}

/* Video: H.264 packetization-mode=1 (Constrained Baseline 42e0xx preferred, then any other
 * profile), else VP8. WHEP subscribers take H.264, so it wins when both are offered. */
static SkWhipCodec
pick_video (const GstSDPMedia *m, guint *out_pt)
{
  int best_h264 = -1, any_h264 = -1, vp8 = -1;

  for (guint i = 0; i < gst_sdp_media_formats_len (m); i++) {
    guint pt;
    char buf[64];

    if (!parse_pt (gst_sdp_media_get_format (m, i), &pt))
      continue;
    if (sk_webrtc_media_rtpmap_is (m, pt, "H264")) {
      const char *pm = sk_webrtc_media_fmtp_get (m, pt, "packetization-mode", buf, sizeof buf);
      if (pm == NULL || strcmp (pm, "1") != 0)
        continue;
      const char *plid = sk_webrtc_media_fmtp_get (m, pt, "profile-level-id", buf, sizeof buf);
      if (best_h264 < 0 && plid != NULL && g_ascii_strncasecmp (plid, "42e0", 4) == 0)
        best_h264 = pt;
      if (any_h264 < 0)
        any_h264 = pt;
    } else if (vp8 < 0 && sk_webrtc_media_rtpmap_is (m, pt, "VP8")) {
      vp8 = pt;
    }
  }
  if (best_h264 >= 0 || any_h264 >= 0) {
    *out_pt = best_h264 >= 0 ? best_h264 : any_h264;
    return SK_WHIP_CODEC_H264;
  }
  if (vp8 >= 0) {
    *out_pt = vp8;
    return SK_WHIP_CODEC_VP8;
  }
  return SK_WHIP_CODEC_NONE;
}

static SkWhipCodec
pick_audio (const GstSDPMedia *m, guint *out_pt)
{
  for (guint i = 0; i < gst_sdp_media_formats_len (m); i++) {
    guint pt;
    if (parse_pt (gst_sdp_media_get_format (m, i), &pt)
        && sk_webrtc_media_rtpmap_is (m, pt, "opus")) {
      *out_pt = pt;
      return SK_WHIP_CODEC_OPUS;
    }
  }
  return SK_WHIP_CODEC_NONE;
}

/* Well-formed SDP (v=0 first, then "<letter>=" lines, text) that has no m= line: a semantic
 * problem (422), not a syntax one (400). */
static gboolean
looks_like_sdp_without_media (const char *text, gsize len)
{
  if (len < 3 || memcmp (text, "v=0", 3) != 0 || memchr (text, '\0', len) != NULL
      || !g_utf8_validate_len (text, len, NULL))
    return FALSE;
  g_autofree char *copy = g_strndup (text, len);
  g_auto (GStrv) lines = g_strsplit (copy, "\n", -1);
  for (guint i = 0; lines[i] != NULL; i++) {
    const char *line = g_strchomp (lines[i]);
    if (*line == '\0')
      continue;
    if (line[0] < 'a' || line[0] > 'z' || line[1] != '=' || line[0] == 'm')
      return FALSE;
  }
  return TRUE;
}

static const char *
attr_media_or_session (const GstSDPMessage *sdp, const GstSDPMedia *m, const char *key)
{
  const char *v = gst_sdp_media_get_attribute_val (m, key);
  return v != NULL ? v : gst_sdp_message_get_attribute_val (sdp, key);
}

SkWhipOffer *
sk_whip_offer_parse (const char *text, gsize len, GError **error)
{
  g_autoptr (SkWhipOffer) offer = NULL;
  g_autoptr (GError) local = NULL;
  GstSDPMessage *sdp = NULL;

  if (len > SK_WHIP_MAX_OFFER_BYTES) {
    g_set_error (error, SK_ERROR, SK_ERROR_TOO_LARGE, "the offer exceeds %u bytes",
                 SK_WHIP_MAX_OFFER_BYTES);
    return NULL;
  }
  if (!sk_webrtc_parse_sdp (text, len, &sdp, &local)) {
    if (g_error_matches (local, SK_ERROR, SK_ERROR_INVALID)
        && looks_like_sdp_without_media (text, len)) {
      g_set_error_literal (error, SK_ERROR, SK_ERROR_UNSUPPORTED,
                           "the offer has no media section: publish at least one track");
      return NULL;
    }
    g_propagate_prefixed_error (error, g_steal_pointer (&local), "the body is not an SDP offer: ");
    return NULL;
  }

  offer = g_new0 (SkWhipOffer, 1);
  offer->sdp = sdp;
  offer->video.mline = offer->audio.mline = -1;

  for (guint i = 0; i < gst_sdp_message_medias_len (sdp); i++) {
    const GstSDPMedia *m = gst_sdp_message_get_media (sdp, i);
    const char *kind = gst_sdp_media_get_media (m);
    gboolean video = g_strcmp0 (kind, "video") == 0;
    SkWhipOfferMedia *slot = video ? &offer->video : &offer->audio;

    if (!video && g_strcmp0 (kind, "audio") != 0) {
      g_set_error (error, SK_ERROR, SK_ERROR_UNSUPPORTED,
                   "media section %u is \"%s\": only audio and video are ingested", i, kind);
      return NULL;
    }
    if (gst_sdp_media_get_proto (m) == NULL
        || strstr (gst_sdp_media_get_proto (m), "SAVPF") == NULL) {
      g_set_error (error, SK_ERROR, SK_ERROR_UNSUPPORTED,
                   "media section %u uses protocol %s: WebRTC needs UDP/TLS/RTP/SAVPF", i,
                   gst_sdp_media_get_proto (m) ? gst_sdp_media_get_proto (m) : "(none)");
      return NULL;
    }
    /* Port 0 without bundle-only is an m-line the offerer itself rejected (RFC 8843). */
    if (gst_sdp_media_get_port (m) == 0
        && gst_sdp_media_get_attribute_val (m, "bundle-only") == NULL)
      continue;
    if (gst_sdp_media_get_attribute_val (m, "recvonly") != NULL
        || gst_sdp_media_get_attribute_val (m, "inactive") != NULL) {
      g_set_error (error, SK_ERROR, SK_ERROR_UNSUPPORTED,
                   "media section %u is %s: a WHIP publisher must send (sendonly)", i,
                   gst_sdp_media_get_attribute_val (m, "recvonly") != NULL ? "recvonly"
                                                                           : "inactive");
      return NULL;
    }
    if (slot->mline >= 0) {
      g_set_error (error, SK_ERROR, SK_ERROR_UNSUPPORTED,
                   "the offer has more than one %s track: one track per kind is ingested", kind);
      return NULL;
    }
    guint pt = 0;
    SkWhipCodec codec = video ? pick_video (m, &pt) : pick_audio (m, &pt);
    if (codec == SK_WHIP_CODEC_NONE) {
      g_set_error (error, SK_ERROR, SK_ERROR_UNSUPPORTED,
                   "no accepted codec in the %s section (accepted: %s)", kind,
                   video ? "H264 with packetization-mode=1, VP8" : "opus");
      return NULL;
    }
    const char *ufrag = attr_media_or_session (sdp, m, "ice-ufrag");
    const char *pwd = attr_media_or_session (sdp, m, "ice-pwd");
    if (ufrag == NULL || pwd == NULL || *ufrag == '\0' || *pwd == '\0') {
      g_set_error (error, SK_ERROR, SK_ERROR_UNSUPPORTED,
                   "media section %u has no ICE credentials (a=ice-ufrag, a=ice-pwd)", i);
      return NULL;
    }
    if (attr_media_or_session (sdp, m, "fingerprint") == NULL) {
      g_set_error (error, SK_ERROR, SK_ERROR_UNSUPPORTED,
                   "media section %u has no DTLS fingerprint (a=fingerprint)", i);
      return NULL;
    }
    if (offer->ice_ufrag == NULL) {
      offer->ice_ufrag = g_strdup (ufrag);
      offer->ice_pwd = g_strdup (pwd);
    }
    for (guint j = 0; j < gst_sdp_media_attributes_len (m); j++)
      if (g_strcmp0 (gst_sdp_media_get_attribute (m, j)->key, "candidate") == 0)
        offer->n_candidates++;
    slot->mline = (int)i;
    slot->pt = pt;
    slot->codec = codec;
    slot->mid = g_strdup (gst_sdp_media_get_attribute_val (m, "mid"));
  }

  if (offer->video.mline < 0 && offer->audio.mline < 0) {
    g_set_error_literal (error, SK_ERROR, SK_ERROR_UNSUPPORTED,
                         "the offer has no media section we can receive");
    return NULL;
  }
  return g_steal_pointer (&offer);
}

GstCaps *
sk_whip_offer_get_caps (const SkWhipOffer *offer, const SkWhipOfferMedia *media)
{
  if (media->mline < 0)
    return NULL;
  const GstSDPMedia *m = gst_sdp_message_get_media (offer->sdp, media->mline);
  GstCaps *caps = gst_sdp_media_get_caps_from_media (m, media->pt);
  if (caps == NULL)
    return NULL;
  caps = gst_caps_make_writable (caps);
  GstStructure *s = gst_caps_get_structure (caps, 0);
  gst_structure_set_name (s, "application/x-rtp");
  gst_structure_set (s, "media", G_TYPE_STRING, gst_sdp_media_get_media (m), NULL);
  return caps;
}
