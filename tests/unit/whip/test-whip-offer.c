/* Unit tests for the WHIP offer parser and validator (ingress/whip/sk-whip-offer.c). */
#include <string.h>

#include "common/sk-common.h"
#include "ingress/whip/sk-whip-offer.h"

#define FP                                                                                         \
  "a=fingerprint:sha-256 "                                                                         \
  "AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:"  \
  "AB\r\n"
#define HEAD "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE v a\r\n"
#define ICE "a=ice-ufrag:Fx3q\r\na=ice-pwd:6pWEfhTHQKTgDkM2aXH8kEnN\r\n" FP "a=setup:actpass\r\n"
#define VIDEO(dir, fmts, maps)                                                                     \
  "m=video 9 UDP/TLS/RTP/SAVPF " fmts "\r\nc=IN IP4 0.0.0.0\r\n" ICE "a=mid:v\r\na=" dir "\r\n"    \
  "a=rtcp-mux\r\n" maps
#define AUDIO(dir)                                                                                 \
  "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n" ICE "a=mid:a\r\na=" dir "\r\n"         \
  "a=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n"
#define H264_MAPS                                                                                  \
  "a=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1;profile-level-id=640c1f\r\n"           \
  "a=rtpmap:98 H264/90000\r\na=fmtp:98 packetization-mode=0;profile-level-id=42e01f\r\n"           \
  "a=rtpmap:102 H264/90000\r\na=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;"          \
  "profile-level-id=42e01f\r\na=rtpmap:97 VP8/90000\r\n"
#define CAND "a=candidate:1 1 UDP 2122260223 127.0.0.1 50000 typ host\r\n"

static SkWhipOffer *
parse (const char *text, GError **error)
{
  return sk_whip_offer_parse (text, strlen (text), error);
}

static void
test_h264_opus (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (SkWhipOffer) offer
      = parse (HEAD VIDEO ("sendonly", "96 98 102 97", H264_MAPS CAND) AUDIO ("sendonly"), &error);

  g_assert_no_error (error);
  g_assert_nonnull (offer);
  g_assert_cmpint (offer->video.mline, ==, 0);
  g_assert_cmpint (offer->video.codec, ==, SK_WHIP_CODEC_H264);
  /* Constrained Baseline with packetization-mode=1 wins over High and over mode 0. */
  g_assert_cmpuint (offer->video.pt, ==, 102);
  g_assert_cmpstr (offer->video.mid, ==, "v");
  g_assert_cmpint (offer->audio.mline, ==, 1);
  g_assert_cmpint (offer->audio.codec, ==, SK_WHIP_CODEC_OPUS);
  g_assert_cmpuint (offer->audio.pt, ==, 111);
  g_assert_cmpstr (offer->ice_ufrag, ==, "Fx3q");
  g_assert_cmpuint (offer->n_candidates, ==, 1);

  g_autoptr (GstCaps) caps = sk_whip_offer_get_caps (offer, &offer->video);
  g_assert_nonnull (caps);
  GstStructure *s = gst_caps_get_structure (caps, 0);
  g_assert_cmpstr (gst_structure_get_name (s), ==, "application/x-rtp");
  g_assert_cmpstr (gst_structure_get_string (s, "encoding-name"), ==, "H264");
  g_assert_cmpstr (gst_structure_get_string (s, "media"), ==, "video");
}

static void
test_other_profiles_and_vp8 (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (SkWhipOffer) high
      = parse (HEAD VIDEO ("sendonly", "96",
                           "a=rtpmap:96 H264/90000\r\n"
                           "a=fmtp:96 packetization-mode=1;profile-level-id=640c1f\r\n"),
               &error);
  g_assert_no_error (error);
  g_assert_cmpint (high->video.codec, ==, SK_WHIP_CODEC_H264);
  g_assert_cmpint (high->audio.mline, ==, -1);

  g_autoptr (SkWhipOffer) vp8 = parse (
      HEAD VIDEO ("sendrecv", "97", "a=rtpmap:97 VP8/90000\r\n") AUDIO ("sendonly"), &error);
  g_assert_no_error (error);
  g_assert_cmpint (vp8->video.codec, ==, SK_WHIP_CODEC_VP8);
  g_assert_cmpuint (vp8->video.pt, ==, 97);
  g_assert_cmpuint (vp8->n_candidates, ==, 0); /* OBS 30.2+: no candidates at all */

  g_autoptr (SkWhipOffer) audio = parse (HEAD AUDIO ("sendonly"), &error);
  g_assert_no_error (error);
  g_assert_cmpint (audio->video.mline, ==, -1);
  g_assert_cmpint (audio->audio.mline, ==, 0);
}

static void
expect_error (const char *text, gsize len, int code, const char *fragment)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (SkWhipOffer) offer = sk_whip_offer_parse (text, len, &error);

  g_assert_null (offer);
  g_assert_error (error, SK_ERROR, code);
  if (fragment != NULL && strstr (error->message, fragment) == NULL)
    g_error ("\"%s\" does not mention \"%s\"", error->message, fragment);
}

#define EXPECT(text, code, fragment) expect_error (text, strlen (text), code, fragment)

static void
test_errors (void)
{
  EXPECT ("", SK_ERROR_INVALID, NULL);
  EXPECT ("hello", SK_ERROR_INVALID, "not an SDP");
  EXPECT ("{\"sdp\": \"v=0\"}", SK_ERROR_INVALID, NULL);
  EXPECT (HEAD, SK_ERROR_UNSUPPORTED, "no media");
  EXPECT (HEAD VIDEO ("recvonly", "97", "a=rtpmap:97 VP8/90000\r\n"), SK_ERROR_UNSUPPORTED,
          "recvonly");
  EXPECT (HEAD AUDIO ("inactive"), SK_ERROR_UNSUPPORTED, "inactive");
  EXPECT (HEAD AUDIO ("sendonly") AUDIO ("sendonly"), SK_ERROR_UNSUPPORTED, "more than one audio");
  EXPECT (HEAD VIDEO ("sendonly", "98", "a=rtpmap:98 VP9/90000\r\n"), SK_ERROR_UNSUPPORTED,
          "codec");
  EXPECT (
      HEAD VIDEO ("sendonly", "98", "a=rtpmap:98 H264/90000\r\na=fmtp:98 packetization-mode=0\r\n"),
      SK_ERROR_UNSUPPORTED, "codec");
  EXPECT (HEAD "m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=sendonly\r\n" ICE "a=rtpmap:0 PCMU/8000\r\n",
          SK_ERROR_UNSUPPORTED, "opus");
  EXPECT (HEAD "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n" ICE, SK_ERROR_UNSUPPORTED,
          "only audio and video");
  EXPECT (HEAD "m=audio 9 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n" ICE, SK_ERROR_UNSUPPORTED,
          "SAVPF");
  EXPECT (HEAD "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n" FP "a=rtpmap:111 opus/48000/2\r\n",
          SK_ERROR_UNSUPPORTED, "ICE credentials");
  EXPECT (HEAD "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ice-ufrag:a\r\na=ice-pwd:b\r\n"
               "a=rtpmap:111 opus/48000/2\r\n",
          SK_ERROR_UNSUPPORTED, "fingerprint");
  /* The only m-line is one the offerer rejected itself (port 0, not bundle-only). */
  EXPECT (HEAD "m=audio 0 UDP/TLS/RTP/SAVPF 111\r\n" ICE "a=rtpmap:111 opus/48000/2\r\n",
          SK_ERROR_UNSUPPORTED, "no media section we can receive");

  /* Over the size limit: refused before parsing. */
  gsize big_len = SK_WHIP_MAX_OFFER_BYTES + 1;
  g_autofree char *big = g_malloc (big_len);
  memset (big, 'a', big_len);
  expect_error (big, big_len, SK_ERROR_TOO_LARGE, NULL);
  /* NUL bytes and invalid UTF-8 are not SDP. */
  expect_error ("v=0\r\n\0m=", 8, SK_ERROR_INVALID, NULL);
  EXPECT ("v=0\r\ns=\xff\xfe\r\n", SK_ERROR_INVALID, NULL);
}

int
main (int argc, char **argv)
{
  gst_init (&argc, &argv);
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/whip/offer/h264-opus", test_h264_opus);
  g_test_add_func ("/whip/offer/profiles-vp8-audio-only", test_other_profiles_and_vp8);
  g_test_add_func ("/whip/offer/errors", test_errors);
  return g_test_run ();
}
