/* Unit tests for sk-rtp: RTP header parsing, keyframe starts in H.264 and VP8 payloads, SPS
 * figures, and the per-peer rewriting of forwarded packets; and a track of RTP packets. */
#include <gst/gst.h>
#include <string.h>

#include "rooms/sk-rtp.h"
#include "rooms/sk-track.h"

/* x264's SPS for 640x360 (constrained baseline; cropped from 640x368) and 1280x720 (high). */
static const guint8 sps_360p[]
    = { 0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00,
        0x03, 0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2e, 0x48 };
static const guint8 sps_720p[]
    = { 0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00,
        0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x19, 0x60 };

/* A packet: 12-byte header (+ @csrcs CSRCs, + a 2-word extension if @ext), @payload, then
 * @padding bytes of padding. */
static GByteArray *
packet_new (guint8 pt, gboolean marker, guint16 seq, guint32 ts, guint32 ssrc, guint csrcs,
            gboolean ext, const guint8 *payload, gsize len, guint8 padding)
{
  GByteArray *p = g_byte_array_new ();
  guint8 h[12] = { 0x80 | (padding ? 0x20 : 0) | (ext ? 0x10 : 0) | csrcs,
                   (marker ? 0x80 : 0) | pt,
                   seq >> 8,
                   seq & 0xff,
                   ts >> 24,
                   (ts >> 16) & 0xff,
                   (ts >> 8) & 0xff,
                   ts & 0xff,
                   ssrc >> 24,
                   (ssrc >> 16) & 0xff,
                   (ssrc >> 8) & 0xff,
                   ssrc & 0xff };
  g_byte_array_append (p, h, sizeof h);
  for (guint i = 0; i < csrcs; i++) {
    guint8 c[4] = { 0xc0, 0, 0, (guint8)i };
    g_byte_array_append (p, c, 4);
  }
  if (ext) {
    guint8 e[12] = { 0xbe, 0xde, 0x00, 0x02, 0x10, 0xaa, 0x00, 0x00, 0x22, 0xbb, 0xcc, 0x00 };
    g_byte_array_append (p, e, sizeof e);
  }
  g_byte_array_append (p, payload, (guint)len);
  for (guint i = 0; i < padding; i++) {
    guint8 b = i + 1 == padding ? padding : 0;
    g_byte_array_append (p, &b, 1);
  }
  return p;
}

static void
test_parse_header (void)
{
  const guint8 payload[] = { 0x41, 0x9a, 0x01, 0x02 };
  g_autoptr (GByteArray) p
      = packet_new (96, TRUE, 65535, 0xfffffff0, 0x11223344, 2, TRUE, payload, sizeof payload, 3);
  SkRtpHeader h;

  g_assert_true (sk_rtp_parse_header (p->data, p->len, &h));
  g_assert_cmpuint (h.pt, ==, 96);
  g_assert_true (h.marker);
  g_assert_cmpuint (h.seq, ==, 65535);
  g_assert_cmpuint (h.timestamp, ==, 0xfffffff0);
  g_assert_cmpuint (h.ssrc, ==, 0x11223344);
  g_assert_cmpuint (h.csrc_count, ==, 2);
  g_assert_cmpuint (h.header_len, ==, 12 + 8 + 12);
  g_assert_cmpuint (h.payload_len, ==, sizeof payload);
  g_assert_cmpuint (h.padding_len, ==, 3);
  g_assert_cmpmem (h.payload, h.payload_len, payload, sizeof payload);

  /* Each length that overruns the packet is refused. */
  g_assert_false (sk_rtp_parse_header (p->data, 11, &h));         /* short */
  g_assert_false (sk_rtp_parse_header (p->data, 12 + 8 + 6, &h)); /* extension */
  g_assert_false (sk_rtp_parse_header (p->data, 12 + 4, &h));     /* CSRCs */
  g_autoptr (GByteArray) v1 = g_byte_array_sized_new (p->len);
  g_byte_array_append (v1, p->data, p->len);
  v1->data[0] = (v1->data[0] & 0x3f) | 0x40; /* version 1 */
  g_assert_false (sk_rtp_parse_header (v1->data, v1->len, &h));
  v1->data[0] = p->data[0];
  v1->data[v1->len - 1] = 0; /* padding count 0 */
  g_assert_false (sk_rtp_parse_header (v1->data, v1->len, &h));
  v1->data[v1->len - 1] = 200; /* more padding than packet */
  g_assert_false (sk_rtp_parse_header (v1->data, v1->len, &h));
  /* Padding that eats the whole payload is a valid (padding-only) packet. */
  v1->data[v1->len - 1] = sizeof payload + 3;
  g_assert_true (sk_rtp_parse_header (v1->data, v1->len, &h));
  g_assert_cmpuint (h.payload_len, ==, 0);
}

static void
test_h264_keyframes (void)
{
  SkRtpPayloadInfo info;

  /* A single SPS NAL unit: decoder setup, a keyframe start, and its bytes. */
  g_assert_true (sk_rtp_inspect_payload (SK_RTP_CODEC_H264, sps_360p, sizeof sps_360p, &info));
  g_assert_true (info.keyframe);
  g_assert_true (info.sps == sps_360p && info.sps_len == sizeof sps_360p);

  /* STAP-A of SPS and PPS, as Chromium sends them before an IDR. */
  guint8 stap[64] = { 0x78, 0x00, sizeof sps_720p };
  memcpy (stap + 3, sps_720p, sizeof sps_720p);
  gsize n = 3 + sizeof sps_720p;
  const guint8 pps[] = { 0x00, 0x04, 0x68, 0xeb, 0xe3, 0xcb };
  memcpy (stap + n, pps, sizeof pps);
  n += sizeof pps;
  g_assert_true (sk_rtp_inspect_payload (SK_RTP_CODEC_H264, stap, n, &info));
  g_assert_true (info.keyframe);
  g_assert_cmpmem (info.sps, info.sps_len, sps_720p, sizeof sps_720p);
  /* … and cut inside its second unit: malformed, nothing reported. */
  g_assert_false (sk_rtp_inspect_payload (SK_RTP_CODEC_H264, stap, n - 1, &info));
  g_assert_false (info.keyframe);
  g_assert_null (info.sps);

  /* FU-A: only the first fragment of an IDR starts a keyframe. */
  const guint8 fu_idr_start[] = { 0x7c, 0x85, 0x88, 0x84 };
  const guint8 fu_idr_middle[] = { 0x7c, 0x05, 0x11, 0x22 };
  const guint8 fu_p_start[] = { 0x5c, 0x81, 0x9a, 0x00 };
  g_assert_true (sk_rtp_inspect_payload (SK_RTP_CODEC_H264, fu_idr_start, 4, &info));
  g_assert_true (info.keyframe);
  g_assert_true (sk_rtp_inspect_payload (SK_RTP_CODEC_H264, fu_idr_middle, 4, &info));
  g_assert_false (info.keyframe);
  g_assert_true (sk_rtp_inspect_payload (SK_RTP_CODEC_H264, fu_p_start, 4, &info));
  g_assert_false (info.keyframe);
  g_assert_false (sk_rtp_inspect_payload (SK_RTP_CODEC_H264, fu_idr_start, 2, &info));

  /* A P slice; the forbidden bit; an empty payload. */
  const guint8 p_slice[] = { 0x41, 0x9a, 0x00 };
  g_assert_true (sk_rtp_inspect_payload (SK_RTP_CODEC_H264, p_slice, 3, &info));
  g_assert_false (info.keyframe);
  const guint8 forbidden[] = { 0xe5, 0x00 };
  g_assert_false (sk_rtp_inspect_payload (SK_RTP_CODEC_H264, forbidden, 2, &info));
  g_assert_false (sk_rtp_inspect_payload (SK_RTP_CODEC_H264, p_slice, 0, &info));
}

static void
test_h264_sps_info (void)
{
  guint w, h;
  const char *profile;

  g_assert_true (sk_rtp_h264_sps_info (sps_360p, sizeof sps_360p, &w, &h, &profile));
  g_assert_cmpuint (w, ==, 640);
  g_assert_cmpuint (h, ==, 360); /* the cropping applied */
  g_assert_cmpstr (profile, ==, "constrained-baseline");
  g_assert_true (sk_rtp_h264_sps_info (sps_720p, sizeof sps_720p, &w, &h, &profile));
  g_assert_cmpuint (w, ==, 1280);
  g_assert_cmpuint (h, ==, 720);
  g_assert_cmpstr (profile, ==, "high");
  /* Truncated, or not an SPS at all. */
  g_assert_false (sk_rtp_h264_sps_info (sps_720p, 5, &w, &h, &profile));
  g_assert_cmpuint (w, ==, 0);
  const guint8 pps[] = { 0x68, 0xeb, 0xe3, 0xcb, 0x22 };
  g_assert_false (sk_rtp_h264_sps_info (pps, sizeof pps, &w, &h, &profile));
}

static void
test_vp8_keyframes (void)
{
  SkRtpPayloadInfo info;

  /* X, I with a 15-bit picture id, L and T; S, partition 0; a key frame of 1280x720. */
  const guint8 key[] = { 0x90, 0xe0, 0x81, 0x23, 0x05, 0x40, 0x50, 0x42, 0x00,
                         0x9d, 0x01, 0x2a, 0x00, 0x05, 0xd0, 0x02, 0x00 };
  g_assert_true (sk_rtp_inspect_payload (SK_RTP_CODEC_VP8, key, sizeof key, &info));
  g_assert_true (info.keyframe);
  g_assert_cmpuint (info.width, ==, 1280);
  g_assert_cmpuint (info.height, ==, 720);
  /* The same descriptor for an inter frame (P bit), and for a continuation packet (no S). */
  guint8 inter[sizeof key];
  memcpy (inter, key, sizeof key);
  inter[6] |= 0x01;
  g_assert_true (sk_rtp_inspect_payload (SK_RTP_CODEC_VP8, inter, sizeof inter, &info));
  g_assert_false (info.keyframe);
  guint8 cont[sizeof key];
  memcpy (cont, key, sizeof key);
  cont[0] &= ~0x10;
  g_assert_true (sk_rtp_inspect_payload (SK_RTP_CODEC_VP8, cont, sizeof cont, &info));
  g_assert_false (info.keyframe);
  /* A key frame start too short for its header: a keyframe of unknown size. */
  g_assert_true (sk_rtp_inspect_payload (SK_RTP_CODEC_VP8, key, 9, &info));
  g_assert_true (info.keyframe);
  g_assert_cmpuint (info.width, ==, 0);
  /* A descriptor that runs past the payload. */
  g_assert_false (sk_rtp_inspect_payload (SK_RTP_CODEC_VP8, key, 4, &info));
  g_assert_false (sk_rtp_inspect_payload (SK_RTP_CODEC_VP8, key, 1, &info));
  /* Audio: nothing to say, nothing wrong. */
  g_assert_true (sk_rtp_inspect_payload (SK_RTP_CODEC_OPUS, key, 3, &info));
  g_assert_false (info.keyframe);
}

static GstBuffer *
buffer_of (GByteArray *p, GstClockTime pts)
{
  GstBuffer *b = gst_buffer_new_memdup (p->data, p->len);
  GST_BUFFER_PTS (b) = pts;
  return b;
}

static void
assert_packet (GstBuffer *b, guint8 pt, gboolean marker, guint16 seq, guint32 ts, guint32 ssrc,
               const guint8 *payload, gsize len, SkRtpHeader *h)
{
  GstMapInfo map;
  g_assert_true (gst_buffer_map (b, &map, GST_MAP_READ));
  g_assert_true (sk_rtp_parse_header (map.data, map.size, h));
  g_assert_cmpuint (h->pt, ==, pt);
  g_assert_cmpint (h->marker, ==, marker);
  g_assert_cmpuint (h->seq, ==, seq);
  g_assert_cmpuint (h->timestamp, ==, ts);
  g_assert_cmpuint (h->ssrc, ==, ssrc);
  g_assert_cmpmem (h->payload, h->payload_len, payload, len);
  g_assert_cmpuint (map.data[0] & 0x10, ==, 0); /* no extension left */
  h->payload = NULL;                            /* not valid after the unmap */
  gst_buffer_unmap (b, &map);
}

static void
test_rewriter (void)
{
  const guint8 payload[] = { 0x41, 0x9a, 0x01, 0x02, 0x03 };
  SkRtpRewriter rw;
  SkRtpHeader h;

  sk_rtp_rewriter_init (&rw, 0xcafe0001, 102, 90000);
  /* Extension, CSRCs and padding in; the extension goes, the rest stays. */
  g_autoptr (GByteArray) p1
      = packet_new (96, FALSE, 1000, 5000, 0x1234, 1, TRUE, payload, sizeof payload, 2);
  g_autoptr (GstBuffer) in1 = buffer_of (p1, 7 * GST_SECOND);
  GST_BUFFER_FLAG_SET (in1, GST_BUFFER_FLAG_DELTA_UNIT);
  g_autoptr (GstBuffer) out1 = sk_rtp_rewriter_process (&rw, in1);
  g_assert_nonnull (out1);
  GstMapInfo map;
  gst_buffer_map (out1, &map, GST_MAP_READ);
  g_assert_true (sk_rtp_parse_header (map.data, map.size, &h));
  g_assert_cmpuint (h.csrc_count, ==, 1);
  g_assert_cmpuint (h.padding_len, ==, 2);
  g_assert_cmpuint (map.size, ==, 12 + 4 + sizeof payload + 2);
  gst_buffer_unmap (out1, &map);
  guint16 seq0 = h.seq;
  guint32 ts0 = h.timestamp;
  assert_packet (out1, 102, FALSE, seq0, ts0, 0xcafe0001, payload, sizeof payload, &h);
  g_assert_cmpuint (GST_BUFFER_PTS (out1), ==, 7 * GST_SECOND);
  g_assert_true (GST_BUFFER_FLAG_IS_SET (out1, GST_BUFFER_FLAG_DELTA_UNIT));

  /* The input's gap (1001 lost) and wrap-around carry over, offsets kept. */
  g_autoptr (GByteArray) p2
      = packet_new (96, TRUE, 1002, 8000, 0x1234, 0, FALSE, payload, sizeof payload, 0);
  g_autoptr (GstBuffer) in2 = buffer_of (p2, 8 * GST_SECOND);
  g_autoptr (GstBuffer) out2 = sk_rtp_rewriter_process (&rw, in2);
  assert_packet (out2, 102, TRUE, (guint16)(seq0 + 2), ts0 + 3000, 0xcafe0001, payload,
                 sizeof payload, &h);

  /* A new input (another publisher): numbering carries on one step after the last packet. */
  sk_rtp_rewriter_restart (&rw);
  g_autoptr (GByteArray) p3
      = packet_new (111, FALSE, 7, 123456, 0x9999, 0, FALSE, payload, sizeof payload, 0);
  g_autoptr (GstBuffer) in3 = buffer_of (p3, 9 * GST_SECOND);
  g_autoptr (GstBuffer) out3 = sk_rtp_rewriter_process (&rw, in3);
  assert_packet (out3, 102, FALSE, (guint16)(seq0 + 3), ts0 + 3000 + 90000 / 50, 0xcafe0001,
                 payload, sizeof payload, &h);

  /* After another path's packets (the payloader's): on from its last one. */
  sk_rtp_rewriter_continue_after (&rw, 40000, 1000000);
  g_autoptr (GstBuffer) out4 = sk_rtp_rewriter_process (&rw, in2);
  assert_packet (out4, 102, TRUE, 40001, 1000000 + 90000 / 50, 0xcafe0001, payload, sizeof payload,
                 &h);

  /* Not RTP: nothing. */
  const guint8 junk[] = { 0x00, 0x01, 0x02 };
  g_autoptr (GstBuffer) bad = gst_buffer_new_memdup (junk, sizeof junk);
  g_assert_null (sk_rtp_rewriter_process (&rw, bad));
}

static void
count_buffer (SkTrack *track, GstBuffer *buffer, gpointer user_data)
{
  (*(guint *)user_data)++;
}

/* A track of packets: its codec is the encoding's, and its GOP cache counts frames (packets
 * with the marker), not packets, against the frame limit. */
static void
test_track_of_packets (void)
{
  g_autoptr (GstCaps) caps
      = gst_caps_from_string ("application/x-rtp,media=video,encoding-name=H264,clock-rate=90000");
  g_autoptr (SkTrack) track = sk_track_new (SK_TRACK_KIND_VIDEO, "TR_rtp", caps);
  g_assert_cmpstr (sk_track_get_codec (track), ==, "H264");
  g_autoptr (GstCaps) opus
      = gst_caps_from_string ("application/x-rtp,media=audio,encoding-name=OPUS");
  g_assert_cmpstr (sk_track_codec_from_caps (opus), ==, "opus");

  /* A keyframe of 3 packets, then 250 frames of 4 packets each: 1003 packets, 251 frames. */
  const guint8 payload[] = { 0x41, 0x9a };
  guint16 seq = 0;
  for (guint frame = 0; frame < 251; frame++) {
    guint packets = frame == 0 ? 3 : 4;
    for (guint i = 0; i < packets; i++) {
      g_autoptr (GByteArray) p = packet_new (96, i + 1 == packets, seq++, frame * 3000, 1, 0, FALSE,
                                             payload, sizeof payload, 0);
      g_autoptr (GstBuffer) b = buffer_of (p, frame * GST_SECOND / 30);
      if (frame > 0 || i > 0)
        GST_BUFFER_FLAG_SET (b, GST_BUFFER_FLAG_DELTA_UNIT);
      if (i + 1 == packets)
        GST_BUFFER_FLAG_SET (b, GST_BUFFER_FLAG_MARKER);
      sk_track_push (track, b);
    }
  }
  guint replayed = 0;
  guint id = sk_track_add_sink (track, count_buffer, NULL, &replayed, NULL);
  g_assert_cmpuint (replayed, ==, 3 + 250 * 4);
  sk_track_remove_sink (track, id);

  /* 50 more frames pass the 300-frame limit: the GOP is dropped. */
  for (guint frame = 251; frame < 301; frame++) {
    g_autoptr (GByteArray) p
        = packet_new (96, TRUE, seq++, frame * 3000, 1, 0, FALSE, payload, sizeof payload, 0);
    g_autoptr (GstBuffer) b = buffer_of (p, frame * GST_SECOND / 30);
    GST_BUFFER_FLAG_SET (b, GST_BUFFER_FLAG_DELTA_UNIT | GST_BUFFER_FLAG_MARKER);
    sk_track_push (track, b);
  }
  replayed = 0;
  id = sk_track_add_sink (track, count_buffer, NULL, &replayed, NULL);
  g_assert_cmpuint (replayed, ==, 0);
  sk_track_remove_sink (track, id);
}

int
main (int argc, char **argv)
{
  gst_init (&argc, &argv);
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/rtp/parse-header", test_parse_header);
  g_test_add_func ("/rtp/h264-keyframes", test_h264_keyframes);
  g_test_add_func ("/rtp/h264-sps-info", test_h264_sps_info);
  g_test_add_func ("/rtp/vp8-keyframes", test_vp8_keyframes);
  g_test_add_func ("/rtp/rewriter", test_rewriter);
  g_test_add_func ("/rtp/track-of-packets", test_track_of_packets);
  return g_test_run ();
}
