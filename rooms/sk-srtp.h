/* streamkeeper: SRTP (RFC 3711) protection of the RTP we send, on OpenSSL's libcrypto. */
#pragma once

#include <gst/gst.h>

G_BEGIN_DECLS

#define SK_SRTP_MASTER_KEY_LEN 16
#define SK_SRTP_MASTER_SALT_LEN 14
#define SK_SRTP_MAX_TAG_LEN 10

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

/* Takes over the RTP (not RTCP) protection of @srtpenc, an srtpenc inside a dtlssrtpenc, once
 * DTLS has given it keys of a profile that SkSrtpSender implements; until then, and for any
 * other profile, srtpenc protects as before. Its libsrtp, built on NSS, costs several times
 * what OpenSSL does per packet. Returns FALSE (and does nothing) when @srtpenc is not in a
 * dtlssrtpenc. */
gboolean sk_srtp_take_over_srtpenc (GstElement *srtpenc);

G_END_DECLS
