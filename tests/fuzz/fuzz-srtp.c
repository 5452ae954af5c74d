/*
 * libFuzzer target for SRTP from a peer (rooms/sk-srtp.c's receiver): the input is a series of
 * packets, each a 2-byte length then its bytes. A packet whose first byte is odd is taken as
 * plain RTP, protected with the peer's sender and then mutated at one spot picked by its
 * second byte (or not at all), so that authentic and almost-authentic packets get past the tag
 * check; the others go in as they are. Whatever comes in, the receiver answers one of its
 * statuses, writes only inside the packet, and gives back exactly the plain RTP of a packet
 * that was protected and left alone.
 */
#include <stdint.h>
#include <string.h>

#include "rooms/sk-srtp.h"

#define MAX_PACKET 2048

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  static const guint8 master[SK_SRTP_MASTER_KEY_LEN + SK_SRTP_MASTER_SALT_LEN] = {
    0xe1, 0xf9, 0x7a, 0x0d, 0x3e, 0x01, 0x8b, 0xe0, 0xd6, 0x4f, 0xa3, 0x2c, 0x06, 0xde, 0x41,
    0x39, 0x0e, 0xc6, 0x75, 0xad, 0x49, 0x8a, 0xfe, 0xeb, 0xb6, 0x96, 0x0b, 0x3a, 0xab, 0xe6,
  };
  guint tag_len = size > 0 && (data[0] & 1) ? 4 : 10;
  SkSrtpSender *peer = sk_srtp_sender_new (master, sizeof master, tag_len, NULL);
  SkSrtpReceiver *rx = sk_srtp_receiver_new (master, sizeof master, tag_len, NULL);
  g_assert (peer != NULL && rx != NULL);

  size_t off = size > 0 ? 1 : 0;
  while (off + 2 <= size) {
    size_t len = MIN ((size_t)(data[off] << 8 | data[off + 1]), size - off - 2);
    len = MIN (len, MAX_PACKET - SK_SRTP_MAX_TAG_LEN);
    const guint8 *in = data + off + 2;
    off += 2 + len;

    /* Odd first byte: protect it as the peer would, then flip one bit unless the second
     * byte says to leave it authentic. */
    guint8 buf[MAX_PACKET];
    gsize pkt_len = len;
    gboolean protected = FALSE, authentic = FALSE;
    memcpy (buf, in, len);
    if (len >= 2 && (in[0] & 1)) {
      gsize protected_len = sk_srtp_sender_protect (peer, buf, len, sizeof buf);
      if (protected_len > 0) {
        protected = TRUE;
        pkt_len = protected_len;
        authentic = in[1] >= 128;
        if (!authentic)
          buf[in[1] % pkt_len] ^= 0x01 << (in[1] % 8);
      }
    }

    /* exactly the packet's bytes on the heap: ASan sees any access past them */
    guint8 *pkt = g_memdup2 (buf, pkt_len);
    gsize out_len = 0;
    SkSrtpStatus st = sk_srtp_receiver_unprotect (rx, pkt, pkt_len, &out_len);
    g_assert (st <= SK_SRTP_TOO_MANY_SSRCS);
    if (protected && !authentic)
      g_assert (st != SK_SRTP_OK);
    if (st == SK_SRTP_OK) {
      g_assert (out_len + tag_len == pkt_len);
      if (protected)
        g_assert (memcmp (pkt, in, len) == 0);
    }
    g_free (pkt);
  }
  sk_srtp_sender_free (peer);
  sk_srtp_receiver_free (rx);
  return 0;
}
