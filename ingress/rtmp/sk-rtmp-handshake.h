/*
 * streamkeeper: the server side of the RTMP handshake (C0 C1 → S0 S1 S2, then C2).
 *
 * Plain handshake: S1 is random, S2 echoes C1. If C1 carries a Flash-style digest (what ffmpeg
 * and librtmp's FP9 mode send), S1 carries a digest keyed with the FMS key in the same scheme
 * and S2 is signed with a key derived from C1's digest, as Flash clients verify.
 */
#pragma once

#include "sk-rtmp-messages.h"

G_BEGIN_DECLS

#define SK_RTMP_HANDSHAKE_SIZE 1536

typedef struct _SkRtmpHandshake SkRtmpHandshake;

SkRtmpHandshake *sk_rtmp_handshake_new (void);
void sk_rtmp_handshake_free (SkRtmpHandshake *self);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (SkRtmpHandshake, sk_rtmp_handshake_free)

/*
 * Consumes C0+C1 (1537 bytes, appending S0 S1 S2 to @out) or C2 (1536 bytes) from the front of
 * @data, only when the unit is whole. NEED_MORE: *@needed is the unit's full length.
 * ERROR: bad version byte (only 3 is accepted).
 */
SkRtmpParseStatus sk_rtmp_handshake_feed (SkRtmpHandshake *self, const guint8 *data, gsize size,
                                          gsize *consumed, gsize *needed, GByteArray *out,
                                          GError **error);

gboolean sk_rtmp_handshake_is_done (SkRtmpHandshake *self);
/* Whether C1 carried a valid digest (and we answered in that scheme). */
gboolean sk_rtmp_handshake_is_complex (SkRtmpHandshake *self);

G_END_DECLS
