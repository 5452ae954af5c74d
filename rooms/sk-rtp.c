/* streamkeeper: forwarded RTP — header and payload inspection, per-peer rewriting. */
#include "rooms/sk-rtp.h"

#include <gst/codecparsers/gsth264parser.h>
#include <gst/pbutils/codec-utils.h>
#include <string.h>

#define RTP_FIXED_HEADER_LEN 12

/* An SPS is tens of bytes; anything far larger is not one we need to read. */
#define SK_RTP_MAX_SPS_LEN 512

enum {
  H264_NAL_IDR = 5,
  H264_NAL_SPS = 7,
  H264_NAL_STAP_A = 24,
  H264_NAL_FU_A = 28,
};

SkRtpCodec
sk_rtp_codec_from_name (const char *name)
{
  if (name == NULL)
    return SK_RTP_CODEC_NONE;
  if (g_ascii_strcasecmp (name, "H264") == 0)
    return SK_RTP_CODEC_H264;
  if (g_ascii_strcasecmp (name, "VP8") == 0)
    return SK_RTP_CODEC_VP8;
  if (g_ascii_strcasecmp (name, "OPUS") == 0)
    return SK_RTP_CODEC_OPUS;
  return SK_RTP_CODEC_NONE;
}

static guint16
read_u16 (const guint8 *p)
{
  return (guint16)(p[0] << 8 | p[1]);
}

static guint32
read_u32 (const guint8 *p)
{
  return (guint32)p[0] << 24 | (guint32)p[1] << 16 | (guint32)p[2] << 8 | p[3];
}

static void
write_u16 (guint8 *p, guint16 v)
{
  p[0] = v >> 8;
  p[1] = v & 0xff;
}

static void
write_u32 (guint8 *p, guint32 v)
{
  p[0] = v >> 24;
  p[1] = (v >> 16) & 0xff;
  p[2] = (v >> 8) & 0xff;
  p[3] = v & 0xff;
}

gboolean
sk_rtp_parse_header (const guint8 *data, gsize len, SkRtpHeader *out)
{
  memset (out, 0, sizeof *out);
  if (len < RTP_FIXED_HEADER_LEN || (data[0] >> 6) != 2)
    return FALSE;

  gboolean padding = (data[0] & 0x20) != 0, extension = (data[0] & 0x10) != 0;
  gsize header_len = RTP_FIXED_HEADER_LEN + 4 * (gsize)(data[0] & 0x0f);
  if (header_len > len)
    return FALSE;
  if (extension) {
    /* 16-bit profile, 16-bit length in 32-bit words, then the words */
    if (header_len + 4 > len)
      return FALSE;
    header_len += 4 + 4 * (gsize)read_u16 (data + header_len + 2);
    if (header_len > len)
      return FALSE;
  }
  gsize padding_len = 0;
  if (padding) {
    /* The last byte counts the padding, itself included. */
    padding_len = data[len - 1];
    if (padding_len == 0 || padding_len > len - header_len)
      return FALSE;
  }

  out->pt = data[1] & 0x7f;
  out->marker = (data[1] & 0x80) != 0;
  out->seq = read_u16 (data + 2);
  out->timestamp = read_u32 (data + 4);
  out->ssrc = read_u32 (data + 8);
  out->csrc_count = data[0] & 0x0f;
  out->header_len = header_len;
  out->payload = data + header_len;
  out->payload_len = len - header_len - padding_len;
  out->padding_len = padding_len;
  return TRUE;
}

static void
h264_note_nal (const guint8 *nal, gsize len, SkRtpPayloadInfo *out)
{
  guint type = nal[0] & 0x1f;

  if (type == H264_NAL_IDR || type == H264_NAL_SPS)
    out->keyframe = TRUE;
  if (type == H264_NAL_SPS && out->sps == NULL) {
    out->sps = nal;
    out->sps_len = len;
  }
}

/* RFC 6184, packetization mode 1 (what WebRTC uses): single NAL units, STAP-A and FU-A. */
static gboolean
inspect_h264 (const guint8 *payload, gsize len, SkRtpPayloadInfo *out)
{
  if (len < 1 || (payload[0] & 0x80) != 0) /* forbidden_zero_bit */
    return FALSE;

  guint type = payload[0] & 0x1f;
  if (type >= 1 && type <= 23) {
    h264_note_nal (payload, len, out);
  } else if (type == H264_NAL_STAP_A) {
    gsize offset = 1;
    while (offset < len) {
      if (len - offset < 2)
        return FALSE;
      gsize size = read_u16 (payload + offset);
      offset += 2;
      if (size == 0 || size > len - offset)
        return FALSE;
      h264_note_nal (payload + offset, size, out);
      offset += size;
    }
  } else if (type == H264_NAL_FU_A) {
    if (len < 3)
      return FALSE;
    guint fu_type = payload[1] & 0x1f;
    gboolean start = (payload[1] & 0x80) != 0;
    /* A whole SPS is never fragmented by any sane sender; its start alone is not readable. */
    if (start && (fu_type == H264_NAL_IDR || fu_type == H264_NAL_SPS))
      out->keyframe = TRUE;
  }
  /* Other types (STAP-B, MTAP, FU-B: mode 2; reserved) say nothing about keyframes. */
  return TRUE;
}

/* RFC 7741: the payload descriptor, then (at a partition start) the VP8 payload header. */
static gboolean
inspect_vp8 (const guint8 *payload, gsize len, SkRtpPayloadInfo *out)
{
  if (len < 1)
    return FALSE;

  gsize offset = 1;
  gboolean start = (payload[0] & 0x10) != 0;
  guint partition = payload[0] & 0x07;
  if (payload[0] & 0x80) {
    if (len < 2)
      return FALSE;
    guint8 x = payload[1];
    offset = 2;
    if (x & 0x80) { /* I: picture id, 7 or 15 bits */
      if (offset >= len)
        return FALSE;
      offset += (payload[offset] & 0x80) ? 2 : 1;
    }
    if (x & 0x40) /* L: TL0PICIDX */
      offset++;
    if (x & 0x30) /* T or K: TID/Y/KEYIDX */
      offset++;
  }
  if (offset >= len)
    return FALSE;
  if (!start || partition != 0)
    return TRUE;

  const guint8 *frame = payload + offset;
  gsize frame_len = len - offset;
  if ((frame[0] & 0x01) != 0) /* P: an inter frame */
    return TRUE;
  out->keyframe = TRUE;
  /* Key frame header (RFC 6386 §9.1): 3-byte tag, start code 9d 01 2a, 14-bit sizes. */
  if (frame_len >= 10 && frame[3] == 0x9d && frame[4] == 0x01 && frame[5] == 0x2a) {
    out->width = (frame[6] | frame[7] << 8) & 0x3fff;
    out->height = (frame[8] | frame[9] << 8) & 0x3fff;
  }
  return TRUE;
}

gboolean
sk_rtp_inspect_payload (SkRtpCodec codec, const guint8 *payload, gsize len, SkRtpPayloadInfo *out)
{
  gboolean ok = TRUE;

  memset (out, 0, sizeof *out);
  if (codec == SK_RTP_CODEC_H264)
    ok = inspect_h264 (payload, len, out);
  else if (codec == SK_RTP_CODEC_VP8)
    ok = inspect_vp8 (payload, len, out);
  if (!ok)
    memset (out, 0, sizeof *out);
  return ok;
}

gboolean
sk_rtp_h264_sps_info (const guint8 *sps, gsize len, guint *width, guint *height,
                      const char **profile)
{
  *width = *height = 0;
  *profile = NULL;
  if (len < 4 || len > SK_RTP_MAX_SPS_LEN || (sps[0] & 0x1f) != H264_NAL_SPS)
    return FALSE;

  /* The parser takes NAL units with a length prefix (avc) or a start code. */
  guint8 avc[4 + SK_RTP_MAX_SPS_LEN];
  write_u32 (avc, (guint32)len);
  memcpy (avc + 4, sps, len);

  GstH264NalParser *parser = gst_h264_nal_parser_new ();
  GstH264NalUnit nalu;
  GstH264SPS parsed;
  gboolean ok
      = gst_h264_parser_identify_nalu_avc (parser, avc, 0, len + 4, 4, &nalu) == GST_H264_PARSER_OK
        && gst_h264_parser_parse_sps (parser, &nalu, &parsed) == GST_H264_PARSER_OK;
  if (ok) {
    *width = (guint)(parsed.frame_cropping_flag ? parsed.crop_rect_width : parsed.width);
    *height = (guint)(parsed.frame_cropping_flag ? parsed.crop_rect_height : parsed.height);
    gst_h264_sps_clear (&parsed);
    /* profile_idc, constraint flags, level_idc */
    *profile = gst_codec_utils_h264_get_profile (sps + 1, (guint)len - 1);
  }
  gst_h264_nal_parser_free (parser);
  return ok;
}

void
sk_rtp_rewriter_init (SkRtpRewriter *rw, guint32 ssrc, guint8 pt, guint32 clock_rate)
{
  memset (rw, 0, sizeof *rw);
  rw->ssrc = ssrc;
  rw->pt = pt & 0x7f;
  rw->clock_rate = clock_rate > 0 ? clock_rate : SK_RTP_VIDEO_CLOCK_RATE;
  /* Random starting points (RFC 3550 §5.1), as a payloader picks them. */
  rw->seq_delta = (guint16)g_random_int ();
  rw->ts_delta = g_random_int ();
  rw->restart = TRUE;
}

void
sk_rtp_rewriter_restart (SkRtpRewriter *rw)
{
  rw->restart = TRUE;
}

void
sk_rtp_rewriter_continue_after (SkRtpRewriter *rw, guint16 seq, guint32 ts)
{
  rw->last_seq = seq;
  rw->last_ts = ts;
  rw->sent = TRUE;
  rw->restart = TRUE;
}

GstBuffer *
sk_rtp_rewriter_process (SkRtpRewriter *rw, GstBuffer *in)
{
  GstMapInfo map;
  SkRtpHeader h;

  if (!gst_buffer_map (in, &map, GST_MAP_READ))
    return NULL;
  if (!sk_rtp_parse_header (map.data, map.size, &h)) {
    gst_buffer_unmap (in, &map);
    return NULL;
  }

  if (rw->restart) {
    if (rw->sent) {
      /* One step on from the last packet out: a frame's worth of time (20 ms) later. */
      rw->seq_delta = (guint16)(rw->last_seq + 1 - h.seq);
      rw->ts_delta = rw->last_ts + rw->clock_rate / 50 - h.timestamp;
    }
    rw->restart = FALSE;
  }
  guint16 seq = (guint16)(h.seq + rw->seq_delta);
  guint32 ts = h.timestamp + rw->ts_delta;
  rw->last_seq = seq;
  rw->last_ts = ts;
  rw->sent = TRUE;

  /* Fixed header and CSRCs, no extension; the payload and its padding as they were. */
  gsize csrc_len = 4 * (gsize)h.csrc_count;
  gsize body_len = h.payload_len + h.padding_len;
  GstBuffer *out = gst_buffer_new_allocate (NULL, RTP_FIXED_HEADER_LEN + csrc_len + body_len, NULL);
  GstMapInfo omap;
  gst_buffer_map (out, &omap, GST_MAP_WRITE);
  omap.data[0] = 0x80 | (map.data[0] & 0x20) | (guint8)h.csrc_count;
  omap.data[1] = (h.marker ? 0x80 : 0) | rw->pt;
  write_u16 (omap.data + 2, seq);
  write_u32 (omap.data + 4, ts);
  write_u32 (omap.data + 8, rw->ssrc);
  memcpy (omap.data + RTP_FIXED_HEADER_LEN, map.data + RTP_FIXED_HEADER_LEN, csrc_len);
  memcpy (omap.data + RTP_FIXED_HEADER_LEN + csrc_len, h.payload, body_len);
  gst_buffer_unmap (out, &omap);
  gst_buffer_unmap (in, &map);
  gst_buffer_copy_into (out, in, GST_BUFFER_COPY_METADATA, 0, -1);
  return out;
}

gboolean
sk_rtp_caps_is_rtp (const GstCaps *caps)
{
  return caps != NULL && gst_caps_get_size (caps) > 0
         && gst_structure_has_name (gst_caps_get_structure (caps, 0), "application/x-rtp");
}
