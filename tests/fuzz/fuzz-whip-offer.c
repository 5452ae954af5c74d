/*
 * libFuzzer target for WHIP request bodies: the SDP offer parser and validator
 * (ingress/whip/sk-whip-offer.c, over rooms/sk-webrtc.c's SDP checks and GstSDP). Whatever the
 * input, it is refused with one of the documented errors or accepted with a consistent result.
 */
#include <stdint.h>
#include <string.h>

#include "common/sk-common.h"
#include "fuzz-gst.h"
#include "ingress/whip/sk-whip-offer.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  static gboolean initialized;
  GError *error = NULL;

  if (!initialized) {
    fuzz_gst_init (); /* GstCaps need the type system */
    initialized = TRUE;
  }
  SkWhipOffer *offer = sk_whip_offer_parse ((const char *)data, size, &error);
  if (offer == NULL) {
    g_assert (error != NULL && error->domain == SK_ERROR);
    g_assert (error->code == SK_ERROR_INVALID || error->code == SK_ERROR_UNSUPPORTED
              || error->code == SK_ERROR_TOO_LARGE);
    g_error_free (error);
    return 0;
  }
  g_assert (error == NULL);
  g_assert (offer->video.mline >= 0 || offer->audio.mline >= 0);
  g_assert (offer->ice_ufrag != NULL && offer->ice_pwd != NULL);
  const SkWhipOfferMedia *media[] = { &offer->video, &offer->audio };
  for (guint i = 0; i < G_N_ELEMENTS (media); i++) {
    if (media[i]->mline < 0)
      continue;
    g_assert ((guint)media[i]->mline < gst_sdp_message_medias_len (offer->sdp));
    g_assert (media[i]->pt <= 127 && media[i]->codec != SK_WHIP_CODEC_NONE);
    (void)sk_whip_codec_to_string (media[i]->codec);
    GstCaps *caps = sk_whip_offer_get_caps (offer, media[i]);
    if (caps != NULL)
      gst_caps_unref (caps);
  }
  sk_whip_offer_free (offer);
  return 0;
}
