/* libFuzzer target: the server handshake, fed in pieces whose sizes come from the input. */
#include <stdlib.h>

#include "ingress/rtmp/sk-rtmp-handshake.h"

int LLVMFuzzerTestOneInput (const guint8 *data, size_t size);

int
LLVMFuzzerTestOneInput (const guint8 *data, size_t size)
{
  g_autoptr (SkRtmpHandshake) hs = sk_rtmp_handshake_new ();
  g_autoptr (GByteArray) out = g_byte_array_new ();
  gsize off = 0, avail = 0;

  /* Data arrives a growing window at a time, like reads from a socket. */
  while (off < size) {
    avail = MIN (size, avail + 700);
    gsize consumed, needed;
    SkRtmpParseStatus st
        = sk_rtmp_handshake_feed (hs, data + off, avail - off, &consumed, &needed, out, NULL);
    if (st == SK_RTMP_PARSE_ERROR)
      break;
    if (st == SK_RTMP_PARSE_NEED_MORE) {
      if (consumed != 0 || needed <= avail - off)
        abort ();
      if (avail == size)
        break;
      continue;
    }
    if (consumed == 0 || consumed > avail - off)
      abort ();
    off += consumed;
    if (sk_rtmp_handshake_is_done (hs))
      break;
  }
  return 0;
}
