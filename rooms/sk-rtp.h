/*
 * streamkeeper: RTP packets forwarded as they are (an SFU's path), with no depayloader or
 * payloader in between.
 *
 * A WHIP publisher's packets go into its tracks whole; each WebRTC peer that sends a track on
 * rewrites them into its own stream (SSRC, payload type, sequence numbers, timestamps) and
 * drops the header extensions, whose ids were negotiated with the publisher, not with it.
 * The parsers here read network input: every length is checked against the packet.
 */
#pragma once

#include <gst/gst.h>

#include "rooms/sk-track.h"

G_BEGIN_DECLS

typedef enum {
  SK_RTP_CODEC_NONE,
  SK_RTP_CODEC_H264,
  SK_RTP_CODEC_VP8,
  SK_RTP_CODEC_OPUS,
} SkRtpCodec;

/* The RTP clocks WebRTC uses: 90 kHz for video (H.264, VP8), 48 kHz for Opus (RFC 7587). */
#define SK_RTP_VIDEO_CLOCK_RATE 90000
#define SK_RTP_AUDIO_CLOCK_RATE 48000

static inline guint32
sk_rtp_clock_rate_of (SkTrackKind kind)
{
  return kind == SK_TRACK_KIND_VIDEO ? SK_RTP_VIDEO_CLOCK_RATE : SK_RTP_AUDIO_CLOCK_RATE;
}

/* From an RTP encoding name ("H264", "VP8", "OPUS", any case) or a track codec ("opus"). */
SkRtpCodec sk_rtp_codec_from_name (const char *name);

typedef struct {
  guint8 pt;
  gboolean marker;
  guint16 seq;
  guint32 timestamp;
  guint32 ssrc;
  guint csrc_count;
  gsize header_len;      /* fixed header, CSRCs and the header extension */
  const guint8 *payload; /* into the packet */
  gsize payload_len;     /* without the padding */
  gsize padding_len;
} SkRtpHeader;

/* FALSE if @data is not a version 2 RTP packet whose lengths fit in @len. */
gboolean sk_rtp_parse_header (const guint8 *data, gsize len, SkRtpHeader *out);

/* What the payload of one packet says about the frame it belongs to. */
typedef struct {
  /* Carries decoder setup or the start of a keyframe: an H.264 SPS or IDR slice (whole, in a
   * STAP-A or the first FU-A fragment); a VP8 key frame's first partition start. */
  gboolean keyframe;
  /* The H.264 SPS NAL unit in it (header byte included), if any. */
  const guint8 *sps;
  gsize sps_len;
  /* VP8 key frame: its size. 0 when unknown. */
  guint width, height;
} SkRtpPayloadInfo;

/* FALSE (and @out zeroed) if the payload is malformed for @codec; audio has nothing to say. */
gboolean sk_rtp_inspect_payload (SkRtpCodec codec, const guint8 *payload, gsize len,
                                 SkRtpPayloadInfo *out);

/* Size and profile from an H.264 SPS NAL unit (header byte included): GStreamer's SPS parser.
 * @profile: a static string ("constrained-baseline", "high", …) or NULL. */
gboolean sk_rtp_h264_sps_info (const guint8 *sps, gsize len, guint *width, guint *height,
                               const char **profile);

/*
 * One outgoing stream of forwarded packets: rewrites each packet for its peer. Sequence numbers
 * follow the input with their gaps (a loss stays a loss the peer can detect) and carry on from
 * where the last input left off after sk_rtp_rewriter_restart (a new source: another publisher,
 * or the GOP replay of a new binding), so the peer sees one stream.
 */
typedef struct {
  guint32 ssrc;
  guint8 pt;
  guint32 clock_rate;
  gboolean restart; /* the next packet starts a new input */
  guint16 seq_delta;
  guint32 ts_delta;
  guint16 last_seq;
  guint32 last_ts;
  gboolean sent; /* last_seq/last_ts are set */
} SkRtpRewriter;

void sk_rtp_rewriter_init (SkRtpRewriter *rw, guint32 ssrc, guint8 pt, guint32 clock_rate);
/* The next packet comes from a new input: continue the output's numbering from it. */
void sk_rtp_rewriter_restart (SkRtpRewriter *rw);
/* Continue after @seq (another path sent it: the payloader before a switch). */
void sk_rtp_rewriter_continue_after (SkRtpRewriter *rw, guint16 seq, guint32 ts);
/* A new packet (metadata copied, no header extension), or NULL if @in is not RTP. */
GstBuffer *sk_rtp_rewriter_process (SkRtpRewriter *rw, GstBuffer *in);

/* Caps of a track that carries RTP packets as they came:
 * application/x-rtp, media, encoding-name, clock-rate (and what else the caller adds). */
gboolean sk_rtp_caps_is_rtp (const GstCaps *caps);

G_END_DECLS
