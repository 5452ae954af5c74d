/* libFuzzer target: the chunk stream reader. Checks its contract as it goes: a whole chunk
 * or nothing is consumed, and NEED_MORE asks for more than is there. */
#include <stdlib.h>

#include "ingress/rtmp/sk-rtmp-chunk.h"

int LLVMFuzzerTestOneInput (const guint8 *data, size_t size);

int
LLVMFuzzerTestOneInput (const guint8 *data, size_t size)
{
  /* Small limits so the fuzzer reaches them. */
  static const SkRtmpChunkLimits limits = { 4096, 65536, 8 };
  g_autoptr (SkRtmpChunkReader) reader = sk_rtmp_chunk_reader_new (&limits);
  gsize off = 0;

  while (off < size) {
    gsize consumed, needed;
    SkRtmpMessage *msg = NULL;
    SkRtmpParseStatus st = sk_rtmp_chunk_reader_read (reader, data + off, size - off, &consumed,
                                                      &needed, &msg, NULL);
    if (st == SK_RTMP_PARSE_ERROR) {
      if (msg != NULL)
        abort ();
      break;
    }
    if (st == SK_RTMP_PARSE_NEED_MORE) {
      if (consumed != 0 || needed <= size - off || msg != NULL)
        abort ();
      break;
    }
    if (consumed == 0 || consumed > size - off)
      abort ();
    if (msg != NULL && msg->size > limits.max_message_size)
      abort ();
    sk_rtmp_message_free (msg);
    off += consumed;
  }
  return 0;
}
