/*
 * libFuzzer target for the X-Streamkeeper-Participant header of the cluster's internal publish
 * endpoint (ingress/whip/sk-whip-participant.c over json-glib). Whatever the input, it is
 * refused with one of the documented errors or accepted with fields that respect the limits.
 */
#include <stdint.h>
#include <string.h>

#include "common/sk-common.h"
#include "ingress/whip/sk-whip-participant.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  GError *error = NULL;
  SkWhipParticipant *p = sk_whip_participant_parse ((const char *)data, size, &error);

  if (p == NULL) {
    g_assert (error != NULL && error->domain == SK_ERROR);
    g_assert (error->code == SK_ERROR_INVALID || error->code == SK_ERROR_TOO_LARGE);
    g_error_free (error);
    return 0;
  }
  g_assert (error == NULL);
  g_assert (size <= SK_WHIP_PARTICIPANT_MAX_BYTES);
  g_assert (g_str_has_prefix (p->sid, "PA_") && strlen (p->sid) <= 64);
  g_assert (p->identity[0] != '\0' && strlen (p->identity) <= 256);
  g_assert (strlen (p->name) <= 256 && p->kind[0] != '\0' && p->ingress_node[0] != '\0');
  g_assert (p->n_tracks >= 1 && p->n_tracks <= SK_WHIP_PARTICIPANT_MAX_TRACKS);
  for (guint i = 0; i < p->n_tracks; i++) {
    g_assert (g_str_has_prefix (p->tracks[i].sid, "TR_"));
    g_assert (sk_whip_participant_get_track (p, p->tracks[i].kind) == &p->tracks[i]);
  }
  sk_whip_participant_free (p);
  return 0;
}
