/* streamkeeper: SRTP (RFC 3711) for the RTP we send and receive, on OpenSSL's libcrypto. */
#pragma once

#include <gst/gst.h>

G_BEGIN_DECLS

#define SK_SRTP_MASTER_KEY_LEN 16
#define SK_SRTP_MASTER_SALT_LEN 14
#define SK_SRTP_MAX_TAG_LEN 10
/* SSRCs a receiver follows: a WHIP publisher has one per track and one per RTX stream. */
#define SK_SRTP_MAX_SSRCS 16

/* The sending half of one SRTP session: AES_CM_128 with HMAC_SHA1_80 or HMAC_SHA1_32, a
 * rollover counter per SSRC. Not thread-safe: one caller at a time. */
typedef struct _SkSrtpSender SkSrtpSender;

/* @master: the master key then the master salt, as DTLS-SRTP exports them (30 bytes);
 * @tag_len: 10 (HMAC_SHA1_80) or 4 (HMAC_SHA1_32). */
SkSrtpSender *sk_srtp_sender_new (const guint8 *master, gsize master_len, guint tag_len,
                                  GError **error);
void sk_srtp_sender_free (SkSrtpSender *self);
guint sk_srtp_sender_get_tag_len (const SkSrtpSender *self);

/* Protects the RTP packet in @packet[0..@len) in place and appends its tag, within @size
 * bytes. Returns the SRTP packet's length, or 0 (nothing written) when @packet is not an RTP
 * packet whose header fits in @len or @size has no room for the tag. */
gsize sk_srtp_sender_protect (SkSrtpSender *self, guint8 *packet, gsize len, gsize size);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (SkSrtpSender, sk_srtp_sender_free)

/* The receiving half: authentication, replay protection over 128 packets per SSRC (as
 * libsrtp's default), decryption. Not thread-safe. */
typedef struct _SkSrtpReceiver SkSrtpReceiver;

typedef enum {
  SK_SRTP_OK,
  SK_SRTP_MALFORMED,      /* not RTP, or shorter than its header and tag */
  SK_SRTP_AUTH_FAILED,    /* the tag does not match: forged, corrupted or another key */
  SK_SRTP_REPLAYED,       /* seen already, or older than the replay window */
  SK_SRTP_TOO_MANY_SSRCS, /* an authentic packet of one SSRC more than SK_SRTP_MAX_SSRCS */
} SkSrtpStatus;

const char *sk_srtp_status_to_string (SkSrtpStatus status);

SkSrtpReceiver *sk_srtp_receiver_new (const guint8 *master, gsize master_len, guint tag_len,
                                      GError **error);
void sk_srtp_receiver_free (SkSrtpReceiver *self);

/* Checks and decrypts the SRTP packet @packet[0..@len) in place; on SK_SRTP_OK the RTP packet
 * is @packet[0..*@out_len). Any other status: the packet must be dropped, and the receiver's
 * state is as if it had never come (its bytes may have been read, never trusted). */
SkSrtpStatus sk_srtp_receiver_unprotect (SkSrtpReceiver *self, guint8 *packet, gsize len,
                                         gsize *out_len);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (SkSrtpReceiver, sk_srtp_receiver_free)

/* Takes over the RTP (not RTCP) protection of @srtpenc, an srtpenc inside a dtlssrtpenc, once
 * DTLS has given it keys of a profile that SkSrtpSender implements; until then, and for any
 * other profile, srtpenc protects as before. Its libsrtp, built on NSS, costs several times
 * what OpenSSL does per packet. Returns FALSE (and does nothing) when @srtpenc is not in a
 * dtlssrtpenc. */
gboolean sk_srtp_take_over_srtpenc (GstElement *srtpenc);

/* The same for @srtpdec inside a dtlssrtpdec: its RTP is checked and decrypted here once DTLS
 * has keys of a profile SkSrtpReceiver implements; SRTCP and other profiles stay with srtpdec.
 * Packets that fail are dropped and counted, as srtpdec does. */
gboolean sk_srtp_take_over_srtpdec (GstElement *srtpdec);

G_END_DECLS
