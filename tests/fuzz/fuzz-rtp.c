/* libFuzzer target: an RTP packet from a WHIP publisher, as the forwarding path reads it.
 * The first byte picks the codec; the rest is the packet. */
#include "fuzz-gst.h"
#include "rooms/sk-rtp.h"

int LLVMFuzzerInitialize (int *argc, char ***argv);
int LLVMFuzzerTestOneInput (const guint8 *data, size_t size);

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  fuzz_gst_init ();
  return 0;
}

int
LLVMFuzzerTestOneInput (const guint8 *data, size_t size)
{
  static const SkRtpCodec codecs[] = { SK_RTP_CODEC_H264, SK_RTP_CODEC_VP8, SK_RTP_CODEC_OPUS };
  SkRtpHeader h;
  SkRtpPayloadInfo info;

  if (size < 1)
    return 0;
  SkRtpCodec codec = codecs[data[0] % G_N_ELEMENTS (codecs)];
  data++, size--;
  if (!sk_rtp_parse_header (data, size, &h))
    return 0;
  if (sk_rtp_inspect_payload (codec, h.payload, h.payload_len, &info) && info.sps != NULL) {
    guint width, height;
    const char *profile;
    sk_rtp_h264_sps_info (info.sps, info.sps_len, &width, &height, &profile);
  }

  SkRtpRewriter rw;
  sk_rtp_rewriter_init (&rw, 0x12345678, 96, 90000);
  GstBuffer *in = gst_buffer_new_memdup (data, size);
  GstBuffer *out = sk_rtp_rewriter_process (&rw, in);
  if (out == NULL)
    __builtin_trap (); /* parse_header accepted it */
  gst_buffer_unref (out);
  gst_buffer_unref (in);
  return 0;
}
